"""Datasets: id maps, the test holdout and validation split, CSR matrices.

Two input layouts are accepted:

* a directory holding ``train`` and ``test`` files in any format
  :mod:`legcf_core.readers` reads (the two may differ);
* a single file, from which a seeded per-user test share is held out: at
  random, or each user's latest (``--split time``, from the file's time column).

Validation follows the chosen protocol (:mod:`legcf_core.splits`).

Ids (integers or any other tokens, see :mod:`legcf_core.readers.ids`) are
mapped to contiguous indices (users ``0..U-1``, items ``0..I-1``) over train
and test together, so an item seen only in test still gets an index. A pair
listed twice in one file counts once (prepare reports how many were dropped),
before any split.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from legcf_core.config import DEFAULT_VALID_FRACTION
from legcf_core.errors import DataError
from legcf_core.readers import SUFFIXES, Columns
from legcf_core.readers.dataset import CodedDataset, read_coded
from legcf_core.splits import (  # noqa: F401 (binary_csr, holdout_split, split_validation: re-exported)
    binary_csr,
    check_splits,
    holdout_mask,
    holdout_split,
    seen_before,
    split_validation,
    valid_rng,
)


@dataclass(frozen=True)
class Interactions:
    """Mapped interactions of one dataset, split into train/valid/test."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray  # raw id of each user index: int64, or str tokens (object array)
    item_ids: np.ndarray  # raw id of each item index
    duplicates: int = 0  # repeated (user, item) rows dropped while reading
    validation: str = "test-third"  # where valid came from (legcf_core.config.VALIDATIONS)
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

    def seen_before(self, split: str) -> sp.csr_matrix:
        """What a ranking for ``split`` leaves out (:func:`legcf_core.splits.seen_before`)."""
        return seen_before(self.train, self.valid, self.validation, split)


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
    coded: CodedDataset | None = None  # the ids' tokens, rows read and dropped, the readers' notes


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


def load_raw(
    path: Path,
    test_fraction: float,
    seed: int,
    split: str = "auto",
    columns: Columns | None = None,
    min_rating: float | None = None,
) -> RawSplit:
    """Coded train and test pairs with repeated pairs dropped: a directory's own files, or a
    per-user holdout from one file (random, or the latest with ``split="time"``). Codes are
    the integer ids, or indices into ``raw.coded``'s tokens."""
    method = split_method(path, split)
    if method != "files" and not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must lie in (0, 1), got {test_fraction}")
    if method == "files":
        coded = read_coded(list(find_split_files(path)), columns, min_rating)
        train, test = coded.files
        tu, ti, train_repeats = distinct_pairs(train.users, train.items)
        eu, ei, test_repeats = distinct_pairs(test.users, test.items)
        raw = RawSplit(tu, ti, eu, ei, train_repeats + test_repeats, coded=coded)
    else:
        if not path.exists():
            raise DataError(f"dataset {path} does not exist")
        coded = read_coded([path], columns, min_rating, times=method == "time")
        users, items, times = coded.files[0].users, coded.files[0].items, coded.files[0].times
        if method == "time" and times is None:
            raise DataError(
                f"--split time needs a time column, and {path} has none: a header named time or "
                "timestamp, --time-col, or a third column (time) in a CSV/TSV without a header"
            )
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
            coded,
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
    tokens: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
) -> Interactions:
    """Map coded ids, build CSR matrices and the validation split: the paper's third of test
    (``test-third``), the given ``valid_pairs`` carved from training, or none. Codes are the
    raw ids themselves, or indices into the (user, item) ``tokens`` (sorted, so indices keep
    the tokens' order)."""
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
    user_ids = user_ids if tokens[0] is None else tokens[0][user_ids]
    item_ids = item_ids if tokens[1] is None else tokens[1][item_ids]
    return Interactions(train, valid, test, user_ids, item_ids, validation=validation)


def load_dataset(
    path: Path,
    test_fraction: float = 0.2,
    seed: int = 2024,
    split: str = "auto",
    validation: str = "test-third",
    valid_fraction: float | None = None,
    columns: Columns | None = None,
    min_rating: float | None = None,
) -> Interactions:
    """Read, validate and split the dataset at ``path`` under the chosen protocol
    (:mod:`legcf_core.splits`); a split that comes out empty is refused."""
    raw = load_raw(path, test_fraction, seed, split, columns, min_rating)
    coded = raw.coded
    valid_pairs = None
    if validation == "train-fraction":
        raw, *pairs = carve_validation(raw, valid_fraction or DEFAULT_VALID_FRACTION, seed)
        valid_pairs = (pairs[0], pairs[1])
    tokens = (None, None) if coded is None else (coded.user_tokens, coded.item_tokens)
    data = build_interactions(
        raw.train_users,
        raw.train_items,
        raw.test_users,
        raw.test_items,
        seed,
        validation,
        valid_pairs,
        tokens,
    )
    if data.train.nnz == 0:
        raise DataError(f"dataset {path} has no training interactions")
    held_out = split_method(path, split) != "files"
    check_splits(data.train, data.valid, data.test, path, held_out, test_fraction, validation, valid_fraction)
    return replace(data, duplicates=raw.duplicates, counts=read_counts(raw, data), notes=coded.notes)


def read_counts(raw: RawSplit, data: Interactions) -> dict[str, int]:
    """Rows read, rows kept (train + valid + test) and the rows dropped for each reason."""
    assert raw.coded is not None
    read, kept = raw.coded.counts["rows_read"], int(data.train.nnz + data.valid.nnz + data.test.nnz)
    dropped = {"below_min_rating": raw.coded.counts["below_min_rating"], "duplicates": raw.duplicates}
    dropped["test_pair_in_train"] = read - kept - sum(dropped.values())
    return {"rows_read": read, "rows_kept": kept, **dropped}
