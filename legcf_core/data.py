"""Datasets: id maps, the test holdout and validation split, CSR matrices.

Two input layouts are accepted:

* a directory holding ``train`` and ``test`` files in any format
  :mod:`legcf_core.readers` reads (the two may differ);
* a single file, from which a seeded per-user test share is held out.

Ids (integers or any other tokens, see :mod:`legcf_core.readers.ids`) are
mapped to contiguous indices (users ``0..U-1``, items ``0..I-1``) over train
and test together, so an item seen only in test still gets an index. A pair
listed twice in one file counts once (prepare reports how many were dropped),
before any split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from legcf_core.errors import DataError
from legcf_core.readers import SUFFIXES, Columns
from legcf_core.readers.dataset import CodedDataset, read_coded


@dataclass(frozen=True)
class Interactions:
    """Mapped interactions of one dataset, split into train/valid/test."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray  # raw id of each user index: int64, or str tokens (object array)
    item_ids: np.ndarray  # raw id of each item index
    duplicates: int = 0  # repeated (user, item) rows dropped while reading
    counts: dict[str, int] = field(default_factory=dict)  # rows read and dropped, by reason
    notes: tuple[str, ...] = ()  # what the reader wants the user to know (ids read as text)

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


def find_split_files(directory: Path) -> tuple[Path, Path]:
    """Locate ``train.*`` and ``test.*`` inside a dataset directory."""
    found = {}
    for stem in ("train", "test"):
        for suffix in SUFFIXES:
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file():
                found[stem] = candidate
                break
    missing = [s for s in ("train", "test") if s not in found]
    if missing:
        raise DataError(
            f"{directory} has no {' or '.join(missing)} file; "
            f"expected train and test files ending in one of {', '.join(SUFFIXES)}"
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
    path: Path,
    test_fraction: float,
    seed: int,
    columns: Columns | None = None,
    min_rating: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, CodedDataset]:
    """Coded (train_users, train_items, test_users, test_items) with repeated pairs dropped,
    how many were dropped, and the coded dataset (its tokens, counts and notes)."""
    if path.is_dir():
        coded = read_coded(list(find_split_files(path)), columns, min_rating)
        train, test = coded.files
        tu, ti, train_repeats = distinct_pairs(train.users, train.items)
        eu, ei, test_repeats = distinct_pairs(test.users, test.items)
        duplicates = train_repeats + test_repeats
    else:
        if not path.exists():
            raise DataError(f"dataset {path} does not exist")
        coded = read_coded([path], columns, min_rating)
        users, items, duplicates = distinct_pairs(coded.files[0].users, coded.files[0].items)
        tu, ti, eu, ei = holdout_split(users, items, test_fraction, seed)
    if tu.size == 0:
        raise DataError(f"dataset {path} has no training interactions")
    return tu, ti, eu, ei, duplicates, coded


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
    user_tokens: np.ndarray | None = None,
    item_tokens: np.ndarray | None = None,
) -> Interactions:
    """Map coded ids, build CSR matrices, draw the validation split. Codes are the raw ids
    themselves, or indices into ``user_tokens``/``item_tokens`` (sorted, so indices keep their order)."""
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
    user_ids = user_ids if user_tokens is None else user_tokens[user_ids]
    item_ids = item_ids if item_tokens is None else item_tokens[item_ids]
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


def load_dataset(
    path: Path,
    test_fraction: float = 0.2,
    seed: int = 2024,
    columns: Columns | None = None,
    min_rating: float | None = None,
) -> Interactions:
    """Read, validate and split the dataset at ``path``; every split must be non-empty."""
    train_users, train_items, test_users, test_items, duplicates, coded = load_raw(
        path, test_fraction, seed, columns, min_rating
    )
    data = build_interactions(
        train_users, train_items, test_users, test_items, seed, coded.user_tokens, coded.item_tokens
    )
    if data.train.nnz == 0:
        raise DataError(f"dataset {path} has no training interactions")
    check_splits(data, path, held_out=not path.is_dir(), test_fraction=test_fraction)
    read, kept = coded.counts["rows_read"], int(data.train.nnz + data.valid.nnz + data.test.nnz)
    dropped = {"below_min_rating": coded.counts["below_min_rating"], "duplicates": duplicates}
    dropped["test_pair_in_train"] = read - kept - sum(dropped.values())
    counts = {"rows_read": read, "rows_kept": kept, **dropped}
    return replace(data, duplicates=duplicates, counts=counts, notes=coded.notes)


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
