"""Datasets: readers, validation, id maps, the validation split, CSR matrices.

Two input layouts are accepted:

* a directory holding ``train`` and ``test`` files, each either in LightGCN's
  text format (``user item item ...`` per line, ``.txt``) or a CSV/TSV of
  ``user,item`` pairs (``.csv`` / ``.tsv``), with or without a header;
* a single CSV/TSV/LightGCN file, from which a seeded per-user test share is
  held out: at random, or each user's latest (``--split time``, from a third
  ``time`` column of a CSV/TSV).

Validation follows the chosen protocol (:mod:`legcf_core.splits`).

Raw ids must be non-negative integers written in ASCII digits; they are
mapped to contiguous indices (users ``0..U-1``, items ``0..I-1``) over train
and test together, so an item seen only in test still gets an index. A UTF-8
byte order mark at the start of a file is ignored. A pair listed twice in one
file counts once (prepare reports how many were dropped), before any split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from legcf_core.config import DEFAULT_VALID_FRACTION
from legcf_core.errors import DataError
from legcf_core.splits import (  # noqa: F401 (binary_csr, holdout_split, split_validation: re-exported)
    binary_csr,
    check_splits,
    holdout_mask,
    holdout_split,
    seen_before,
    split_validation,
    valid_rng,
)

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
    validation: str = "test-third"  # where valid came from (legcf_core.config.VALIDATIONS)

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

    def seen_before(self, split: str) -> sp.csr_matrix:
        """What a ranking for ``split`` leaves out (:func:`legcf_core.splits.seen_before`)."""
        return seen_before(self.train, self.valid, self.validation, split)


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


def read_pair_times(path: Path) -> np.ndarray:
    """The third column of a CSV/TSV (``user,item,time``) as one number a row, for
    ``--split time``; larger is later (e.g. Unix seconds). Rows as :func:`read_pairs` reads them."""
    if path.suffix.lower() not in PAIR_SUFFIXES:
        raise DataError(
            f"--split time needs a time column: give a CSV/TSV of user,item,time rows, not {path.name}"
        )
    lines = [(n, line.strip()) for n, line in enumerate(_lines(path), start=1) if line.strip()]
    delimiter = "\t" if lines and "\t" in lines[0][1] else ","
    times: list[float] = []
    for index, (lineno, line) in enumerate(lines):
        fields = [f.strip() for f in line.split(delimiter)]
        if index == 0 and not _looks_numeric(fields[0]) and not _looks_numeric(fields[1]):
            continue  # header row
        if len(fields) < 3:
            raise DataError(f"{path}:{lineno}: --split time needs a third column (time), got {line!r}")
        try:
            value = float(fields[2])
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            raise DataError(f"{path}:{lineno}: time {fields[2][:24]!r} is not a finite number")
        times.append(value)
    return np.asarray(times, dtype=np.float64)


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


@dataclass(frozen=True)
class RawSplit:
    """Raw ids of train and test pairs (repeats dropped), how many repeats were dropped, and
    each training pair's time when the split was chronological."""

    train_users: np.ndarray
    train_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    duplicates: int = 0
    train_times: np.ndarray | None = None


def split_method(path: Path, split: str) -> str:
    """``split`` made concrete for ``path``: a directory's own files, or a holdout from one file."""
    if path.is_dir():
        if split not in ("auto", "files"):
            raise DataError(
                f"--split {split} holds out from one file, but {path} is a directory with its own "
                "train/test files; give one file (e.g. a CSV), or --split files"
            )
        return "files"
    if split == "files":
        raise DataError(f"--split files needs a directory with train and test files; {path} is one file")
    return "random" if split == "auto" else split


def load_raw(path: Path, test_fraction: float, seed: int, split: str = "auto") -> RawSplit:
    """Raw train and test pairs with repeated pairs dropped: a directory's own files, or a
    per-user holdout from one file (random, or the latest with ``split="time"``)."""
    method = split_method(path, split)
    if method != "files" and not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must lie in (0, 1), got {test_fraction}")
    if method == "files":
        train_path, test_path = find_split_files(path)
        tu, ti, train_repeats = distinct_pairs(*read_file(train_path))
        eu, ei, test_repeats = distinct_pairs(*read_file(test_path))
        raw = RawSplit(tu, ti, eu, ei, train_repeats + test_repeats)
    else:
        if not path.exists():
            raise DataError(f"dataset {path} does not exist")
        users, items = read_file(path)
        times = read_pair_times(path) if method == "time" else None
        keep = first_rows(users, items)
        duplicates = int(users.size - keep.size)
        users, items = users[keep], items[keep]
        times = None if times is None else times[keep]
        held = holdout_mask(users, test_fraction, np.random.default_rng(seed), times)
        raw = RawSplit(
            users[~held],
            items[~held],
            users[held],
            items[held],
            duplicates,
            None if times is None else times[~held],
        )
    if raw.train_users.size == 0:
        raise DataError(f"dataset {path} has no training interactions")
    return raw


def first_rows(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The rows that keep each (user, item) pair once, at its first row, in file order."""
    if users.size == 0:
        return np.arange(0)
    _, first = np.unique(np.stack([users, items], axis=1), axis=0, return_index=True)
    return np.sort(first)


def distinct_pairs(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Each (user, item) pair once, at its first row, in file order; and the rows dropped."""
    keep = first_rows(users, items)
    return users[keep], items[keep], int(users.size - keep.size)


def carve_validation(raw: RawSplit, fraction: float, seed: int) -> tuple[RawSplit, np.ndarray, np.ndarray]:
    """train-fraction: ``floor(fraction * n_u)`` of each user's training pairs become
    validation (the latest, when the split was chronological); returns the smaller training
    set and the validation (users, items)."""
    held = holdout_mask(raw.train_users, fraction, valid_rng(seed), raw.train_times)
    times = None if raw.train_times is None else raw.train_times[~held]
    train_users, train_items = raw.train_users[~held], raw.train_items[~held]
    rest = replace(raw, train_users=train_users, train_items=train_items, train_times=times)
    return rest, raw.train_users[held], raw.train_items[held]


def build_interactions(
    train_users: np.ndarray,
    train_items: np.ndarray,
    test_users: np.ndarray,
    test_items: np.ndarray,
    seed: int,
    validation: str = "test-third",
    valid_pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> Interactions:
    """Map raw ids, build CSR matrices and the validation split: the paper's third of test
    (``test-third``), the given ``valid_pairs`` carved from training, or none."""
    empty = np.empty(0, dtype=np.int64)
    valid_users, valid_items = valid_pairs if valid_pairs is not None else (empty, empty)
    user_ids = np.unique(np.concatenate([train_users, test_users, valid_users]))
    item_ids = np.unique(np.concatenate([train_items, test_items, valid_items]))
    shape = (user_ids.size, item_ids.size)

    def to_csr(users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
        rows = np.searchsorted(user_ids, users)
        cols = np.searchsorted(item_ids, items)
        return binary_csr(rows, cols, shape)

    train = to_csr(train_users, train_items)
    valid = to_csr(valid_users, valid_items)
    test = to_csr(test_users, test_items)
    seen = train if valid.nnz == 0 else (train + valid)
    test = (test - test.multiply(seen)).tocsr()  # a test pair seen before test is not held out
    test.eliminate_zeros()
    if validation == "test-third":
        valid, test = split_validation(test, seed)
    return Interactions(train, valid, test, user_ids, item_ids, validation=validation)


def load_dataset(
    path: Path,
    test_fraction: float = 0.2,
    seed: int = 2024,
    split: str = "auto",
    validation: str = "test-third",
    valid_fraction: float | None = None,
) -> Interactions:
    """Read, validate and split the dataset at ``path`` under the chosen protocol
    (:mod:`legcf_core.splits`); a split that comes out empty is refused."""
    raw = load_raw(path, test_fraction, seed, split)
    valid_pairs = None
    if validation == "train-fraction":
        raw, *pairs = carve_validation(raw, valid_fraction or DEFAULT_VALID_FRACTION, seed)
        valid_pairs = (pairs[0], pairs[1])
    data = build_interactions(
        raw.train_users, raw.train_items, raw.test_users, raw.test_items, seed, validation, valid_pairs
    )
    if data.train.nnz == 0:
        raise DataError(f"dataset {path} has no training interactions")
    held_out = split_method(path, split) != "files"
    check_splits(data.train, data.valid, data.test, path, held_out, test_fraction, validation, valid_fraction)
    return replace(data, duplicates=raw.duplicates)
