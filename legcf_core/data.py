"""Datasets: readers, validation, id maps, the validation split, CSR matrices.

Two input layouts are accepted:

* a directory holding ``train`` and ``test`` files, each either in LightGCN's
  text format (``user item item ...`` per line, ``.txt``) or a CSV/TSV of
  ``user,item`` pairs (``.csv`` / ``.tsv``), with or without a header;
* a single CSV/TSV/LightGCN file, from which a seeded per-user test share is
  held out.

Raw ids must be non-negative integers written in ASCII digits; they are
mapped to contiguous indices (users ``0..U-1``, items ``0..I-1``) over train
and test together, so an item seen only in test still gets an index. A UTF-8
byte order mark at the start of a file is ignored. A pair listed twice in one
file counts once (prepare reports how many were dropped), before any split.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from legcf_core.errors import DataError

PAIR_SUFFIXES = (".csv", ".tsv")
MAX_ID = int(np.iinfo(np.int64).max)
TEXT_SUFFIXES = (".txt",)
_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class Interactions:
    """Mapped interactions of one dataset, split into train/valid/test."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray  # raw id of each user index
    item_ids: np.ndarray  # raw id of each item index
    duplicates: int = 0  # repeated (user, item) rows dropped while reading

    @property
    def n_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    @property
    def n_entities(self) -> int:
        return self.n_users + self.n_items

    def split(self, name: str) -> sp.csr_matrix:
        if name not in ("train", "valid", "test"):
            raise DataError(f"unknown split {name!r}; expected train, valid or test")
        return getattr(self, name)


def _parse_id(token: str, where: str) -> int:
    """An id in ASCII digits (Python's int() would also take ``1_000`` and non-ASCII digits)."""
    if len(token) > 24 or not _ASCII_INTEGER.fullmatch(token):
        shown = token if len(token) <= 24 else token[:21] + "..."
        raise DataError(f"{where}: id {shown!r} is not an integer")
    value = int(token)
    if value < 0:
        raise DataError(f"{where}: id {value} is negative; ids must be >= 0")
    if value > MAX_ID:
        raise DataError(f"{where}: id {value} is larger than the largest supported id {MAX_ID}")
    return value


def read_lightgcn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``user item item ...`` lines into parallel (user, item) arrays."""
    users: list[int] = []
    items: list[int] = []
    for lineno, line in enumerate(_lines(path), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}:{lineno}"
        user = _parse_id(tokens[0], where)
        row = [_parse_id(tok, where) for tok in tokens[1:]]
        users.extend([user] * len(row))
        items.extend(row)
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)


def read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV/TSV of ``user,item[,...]`` rows; a non-numeric first row is a header."""
    users: list[int] = []
    items: list[int] = []
    lines = [(n, line.strip()) for n, line in enumerate(_lines(path), start=1) if line.strip()]
    if not lines:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    delimiter = "\t" if "\t" in lines[0][1] else ","
    for index, (lineno, line) in enumerate(lines):
        fields = [f.strip() for f in line.split(delimiter)]
        where = f"{path}:{lineno}"
        if len(fields) < 2:
            raise DataError(f"{where}: expected 'user{delimiter}item', got {line!r}")
        if index == 0 and not _looks_numeric(fields[0]) and not _looks_numeric(fields[1]):
            continue  # header row
        users.append(_parse_id(fields[0], where))
        items.append(_parse_id(fields[1], where))
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)


def _looks_numeric(token: str) -> bool:
    return token.isascii() and token.lstrip("+-").replace(".", "", 1).isdigit()


def _lines(path: Path) -> list[str]:
    """All lines of a UTF-8 text file (a leading byte order mark dropped), with file errors
    turned into DataError."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.readlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except FileNotFoundError:
        raise DataError(f"dataset file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, expected a file") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None


def read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one interaction file, choosing the reader from its suffix."""
    if path.suffix.lower() in PAIR_SUFFIXES:
        return read_pairs(path)
    return read_lightgcn(path)


def find_split_files(directory: Path) -> tuple[Path, Path]:
    """Locate ``train.*`` and ``test.*`` inside a dataset directory."""
    found = {}
    for stem in ("train", "test"):
        for suffix in TEXT_SUFFIXES + PAIR_SUFFIXES:
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file():
                found[stem] = candidate
                break
    missing = [s for s in ("train", "test") if s not in found]
    if missing:
        raise DataError(
            f"{directory} has no {' or '.join(missing)} file; "
            "expected train.txt/test.txt (LightGCN format) or train.csv/test.csv"
        )
    return found["train"], found["test"]


def dataset_files(path: Path) -> list[Path]:
    """The files a dataset at ``path`` is read from (for checksums)."""
    if path.is_dir():
        return list(find_split_files(path))
    if not path.exists():
        raise DataError(f"dataset {path} does not exist")
    return [path]


def load_raw(
    path: Path, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Raw (train_users, train_items, test_users, test_items) with repeated pairs dropped,
    and how many were dropped."""
    if path.is_dir():
        train_path, test_path = find_split_files(path)
        tu, ti, train_repeats = distinct_pairs(*read_file(train_path))
        eu, ei, test_repeats = distinct_pairs(*read_file(test_path))
        duplicates = train_repeats + test_repeats
    else:
        if not path.exists():
            raise DataError(f"dataset {path} does not exist")
        users, items, duplicates = distinct_pairs(*read_file(path))
        tu, ti, eu, ei = holdout_split(users, items, test_fraction, seed)
    if tu.size == 0:
        raise DataError(f"dataset {path} has no training interactions")
    return tu, ti, eu, ei, duplicates


def distinct_pairs(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Each (user, item) pair once, at its first row, in file order; and the rows dropped."""
    if users.size == 0:
        return users, items, 0
    _, first = np.unique(np.stack([users, items], axis=1), axis=0, return_index=True)
    keep = np.sort(first)
    return users[keep], items[keep], int(users.size - keep.size)


def holdout_split(
    users: np.ndarray, items: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out ``floor(test_fraction * n_u)`` of each user's items (seeded)."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(users.size), users))
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, users.size])
    rank = np.arange(users.size) - np.repeat(starts, counts)
    n_test = np.floor(test_fraction * counts).astype(np.int64)
    is_test = rank < np.repeat(n_test, counts)
    return users[~is_test], items[~is_test], users[is_test], items[is_test]


def build_interactions(
    train_users: np.ndarray,
    train_items: np.ndarray,
    test_users: np.ndarray,
    test_items: np.ndarray,
    seed: int,
) -> Interactions:
    """Map raw ids, build CSR matrices, draw the validation split."""
    user_ids = np.unique(np.concatenate([train_users, test_users]))
    item_ids = np.unique(np.concatenate([train_items, test_items]))
    shape = (user_ids.size, item_ids.size)

    def to_csr(users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
        rows = np.searchsorted(user_ids, users)
        cols = np.searchsorted(item_ids, items)
        return binary_csr(rows, cols, shape)

    train = to_csr(train_users, train_items)
    test = to_csr(test_users, test_items)
    test = (test - test.multiply(train)).tocsr()  # a test pair seen in train is not held out
    test.eliminate_zeros()
    valid, test = split_validation(test, seed)
    return Interactions(train, valid, test, user_ids, item_ids)


def binary_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A 0/1 float32 CSR matrix with sorted indices and duplicates merged."""
    data = np.ones(rows.size, dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def split_validation(test: sp.csr_matrix, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The paper's protocol: ceil(1/3) of each user's test items go to validation."""
    rng = np.random.default_rng(seed)
    valid_rows, valid_cols, test_rows, test_cols = [], [], [], []
    for user in range(test.shape[0]):
        items = test.indices[test.indptr[user] : test.indptr[user + 1]]
        if items.size == 0:
            continue
        shuffled = rng.permutation(items)
        n_valid = math.ceil(items.size / 3)
        valid_rows.append(np.full(n_valid, user))
        valid_cols.append(shuffled[:n_valid])
        test_rows.append(np.full(items.size - n_valid, user))
        test_cols.append(shuffled[n_valid:])

    def gather(rows: list, cols: list) -> sp.csr_matrix:
        if not rows:
            return sp.csr_matrix(test.shape, dtype=np.float32)
        return binary_csr(np.concatenate(rows), np.concatenate(cols), test.shape)

    return gather(valid_rows, valid_cols), gather(test_rows, test_cols)


def load_dataset(path: Path, test_fraction: float = 0.2, seed: int = 2024) -> Interactions:
    """Read, validate and split the dataset at ``path``; every split must be non-empty."""
    train_users, train_items, test_users, test_items, duplicates = load_raw(path, test_fraction, seed)
    data = build_interactions(train_users, train_items, test_users, test_items, seed)
    if data.train.nnz == 0:
        raise DataError(f"dataset {path} has no training interactions")
    check_splits(data, path, held_out=not path.is_dir(), test_fraction=test_fraction)
    return replace(data, duplicates=duplicates)


def check_splits(data: Interactions, path: Path, held_out: bool, test_fraction: float) -> None:
    """Refuse an empty validation or test split, saying why it is empty."""
    if data.valid.nnz + data.test.nnz == 0:
        if held_out:
            need = math.ceil(1 / test_fraction)
            why = (
                f"with test_fraction {test_fraction} a user needs at least {need} distinct items "
                "to hold one out, and none has"
            )
        else:
            why = "every pair of the test file is also in the train file (or the test file is empty)"
        raise DataError(f"dataset {path} gives an empty test split: {why}")
    most = int(np.diff((data.valid + data.test).tocsr().indptr).max())
    if data.test.nnz == 0:
        raise DataError(
            f"dataset {path} gives an empty test split: validation takes ceil(1/3) of each user's "
            f"held-out items, and no user has more than {most}; hold out more items per user"
        )
    if data.valid.nnz == 0:  # cannot happen while validation takes ceil(1/3) of a non-empty test
        raise DataError(f"dataset {path} gives an empty validation split")
