"""A trained embedding table coded as a codebook and a sparse assignment: LEGCF's start from a teacher.

LEGCF starts from METIS anchors and a random codebook, and its training has to
find what a full table learns with 44x the numbers. Where a full table has been
trained on the same data, its rows say what each entity should be: coding them
as S M (t codes a row on average, ``pooled`` as the assignment update shares
them) gives pretrain a start whose ranking is already close to the teacher's.

The coding alternates the two halves of the problem, as k-SVD and MOD do:
S from M by the update's own pooled pursuit, then M from S by least squares.
A meta-embedding no row chose is reset to the row the coding fits worst, so
none stays dead (docs/design.md has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.assignment import POOLED_MOST, pool_codes, pursue
from legcf_core.compact import refit_meta_rows
from legcf_core.partition import rows_to_csr

CODING_ROUNDS = 15
"""Alternations of the coding: on ml-1m the fit of the teacher's table stops improving by
the 10th (mean relative error 0.841 after 5, 0.833 after 10, 0.831 after 15)."""


@dataclass
class TableCode:
    """S (N x c, float32 CSR) and M (c x d) with S M close to the table, and how close."""

    assignment: sp.csr_matrix
    codebook: torch.Tensor
    relative_error: float  # mean over rows of |row - (S M)_row| / |row|
    revived: int  # meta-embeddings reset because no row used them, over all rounds


def code_table(
    table: torch.Tensor, codebook_size: int, per_entity: int, rounds: int = CODING_ROUNDS, seed: int = 0
) -> TableCode:
    """``table`` (N x d) as S M with c = ``codebook_size`` meta-embeddings and N t weights,
    S's weights >= 0 (as the assignment update keeps them); seeded, so a rerun gives the same code."""
    target = table.detach().double().cpu()
    n = target.shape[0]
    if not 1 <= per_entity <= codebook_size <= n:
        raise ValueError(f"need 1 <= t <= c <= N, got t={per_entity}, c={codebook_size}, N={n}")
    rng = np.random.default_rng(seed)
    codebook = target[rng.choice(n, codebook_size, replace=False)].clone()
    most = min(POOLED_MOST * per_entity, codebook_size)
    revived = 0
    for _ in range(max(rounds, 1)):
        columns, weights = pool_codes(pursue(target, codebook, most), per_entity)
        weights = np.clip(weights, 0.0, None)
        assignment = rows_to_csr(columns, weights, codebook_size)
        codebook = refit_meta_rows(target, codebook, columns, weights)  # keeps unused rows as they are
        dead = np.flatnonzero(np.asarray(assignment.getnnz(axis=0)) == 0)
        revived += revive(codebook, dead, assignment, target)  # rows S does not use: S M is unchanged
    return TableCode(assignment, codebook.float(), relative_error(assignment, codebook, target), revived)


def revive(codebook: torch.Tensor, dead: np.ndarray, assignment: sp.csr_matrix, target: torch.Tensor) -> int:
    """Reset each unused meta-embedding to one of the rows the code fits worst (in place)."""
    if dead.size == 0:
        return 0
    residual = (target - torch.from_numpy(assignment.astype(np.float64) @ codebook.numpy())).norm(dim=1)
    worst = torch.argsort(residual, descending=True)[: dead.size].numpy()
    codebook[dead] = target[worst]
    return int(dead.size)


def relative_error(assignment: sp.csr_matrix, codebook: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over the table's nonzero rows of |row - (S M)_row| / |row|."""
    rebuilt = torch.from_numpy(assignment.astype(np.float64) @ codebook.double().numpy())
    norms = target.norm(dim=1)
    nonzero = norms > 0
    return float(((rebuilt - target).norm(dim=1)[nonzero] / norms[nonzero]).mean())
