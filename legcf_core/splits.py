"""How a dataset's interactions are divided (the evaluation protocol), torch-free.

- The test holdout of a single file: per user, ``floor(test_fraction * n_u)`` of the
  user's interactions, drawn at random (seeded) or, with ``--split time``, the
  user's latest ones, so the model is tested on what came after what it learned.
- Validation is a choice (:data:`legcf_core.config.VALIDATIONS`): the LEGCF paper's
  ``test-third`` (ceil(1/3) of each user's test items, still ranked as misses
  in test), ``train-fraction`` (a per-user share of training, so the whole test
  set is scored as in LightGCN and its successors), or ``none``.
- The checks that refuse a split that came out empty, saying which and what to
  change, and the notes on splits that came out thin.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from legcf_core.errors import DataError


def binary_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A 0/1 float32 CSR matrix with sorted indices and duplicates merged."""
    data = np.ones(rows.size, dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def holdout_mask(
    users: np.ndarray, fraction: float, rng: np.random.Generator, times: np.ndarray | None = None
) -> np.ndarray:
    """Which rows to hold out: ``floor(fraction * n_u)`` of each user's rows, drawn at random
    or, given a time per row, the user's latest ones (equal times are drawn at random).

    The random draw is the one legcf has always made (one uniform number a row, in
    row order), so a seed gives the same split as before ``times`` existed."""
    noise = rng.random(users.size)
    keys = (noise, users) if times is None else (noise, -np.asarray(times), users)
    order = np.lexsort(keys)
    ordered = users[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, users.size])
    rank = np.arange(users.size) - np.repeat(starts, counts)
    n_held = np.floor(fraction * counts).astype(np.int64)
    mask = np.zeros(users.size, dtype=bool)
    mask[order] = rank < np.repeat(n_held, counts)
    return mask


def valid_rng(seed: int) -> np.random.Generator:
    """The generator of the train-fraction carve: its own stream, so it never shifts the
    test holdout drawn from ``seed``."""
    return np.random.default_rng([seed, 1])


def holdout_split(
    users: np.ndarray, items: np.ndarray, test_fraction: float, seed: int, times: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out ``floor(test_fraction * n_u)`` of each user's items (seeded): at random, or
    given a time per row (``times``, larger is later), each user's latest."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must lie in (0, 1), got {test_fraction}")
    held = holdout_mask(users, test_fraction, np.random.default_rng(seed), times)
    return users[~held], items[~held], users[held], items[held]


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


def seen_before(train: sp.csr_matrix, valid: sp.csr_matrix, validation: str, split: str) -> sp.csr_matrix:
    """The interactions a ranking for ``split`` leaves out: training, and under train-fraction
    also validation when testing (those items were known before test, carved from training).
    Under test-third, validation items stay in the test ranking as misses, as in the paper."""
    if split == "test" and validation == "train-fraction" and valid.nnz:
        known = (train + valid).tocsr()
        known.data[:] = 1.0
        return known
    return train


def _per_user_max(matrix: sp.csr_matrix) -> int:
    return int(np.diff(matrix.indptr).max()) if matrix.shape[0] else 0


def check_splits(
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    test: sp.csr_matrix,
    path: Path,
    held_out: bool,
    test_fraction: float,
    validation: str,
    valid_fraction: float | None,
) -> None:
    """Refuse a test (or validation) split that came out empty, saying why and what to change."""
    held = test + valid if validation == "test-third" else test
    if held.nnz == 0:
        if held_out:
            need = math.ceil(1 / test_fraction)
            why = (
                f"with --test-fraction {test_fraction} a user needs at least {need} distinct items "
                "to hold one out, and none has; raise --test-fraction or give train/test files"
            )
        else:
            why = "every pair of the test file is also in the train file (or the test file is empty)"
        raise DataError(f"dataset {path} gives an empty test split: {why}")
    if test.nnz == 0:  # only test-third takes validation from test
        raise DataError(
            f"dataset {path} gives an empty test split: --validation test-third takes ceil(1/3) of "
            f"each user's held-out items, and no user has more than {_per_user_max(held)}; use "
            "--validation train-fraction (validation from training) or none, or hold out more items"
        )
    if validation != "none" and valid.nnz == 0:
        if validation == "train-fraction":
            need = math.ceil(1 / valid_fraction) if valid_fraction else 0
            raise DataError(
                f"dataset {path} gives an empty validation split: --valid-fraction {valid_fraction} "
                f"carves floor({valid_fraction} x n) of a user's n training items, so a user needs "
                f"{need}, and none has more than {_per_user_max(train)}; raise --valid-fraction "
                "or use --validation none"
            )
        raise DataError(f"dataset {path} gives an empty validation split")


def split_notes(
    train: sp.csr_matrix, valid: sp.csr_matrix, test: sp.csr_matrix, validation: str
) -> list[str]:
    """Warnings on splits that came out thin: users left out of test, and why."""
    notes = []
    tested = np.diff(test.indptr) > 0
    if validation == "test-third":
        lost = int(((np.diff(valid.indptr) > 0) & ~tested).sum())
        held = int(((np.diff(valid.indptr) + np.diff(test.indptr)) > 0).sum())
        if lost and lost >= 0.1 * held:
            notes.append(
                f"--validation test-third sent every held-out item of {lost:,} of {held:,} users to "
                "validation, so they are not tested; --validation train-fraction tests every held-out item"
            )
    untrained = int(((np.diff(train.indptr) == 0) & tested).sum())
    if untrained:
        notes.append(f"{untrained:,} tested users have no training interaction (they score as cold users)")
    return notes
