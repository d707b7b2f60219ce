"""The assignment update: S re-solved from the propagated embeddings.

Two solvers (``--solver``). ``pinv`` is the paper's closed form, S <- top-t(H_full
pinv(H_meta)) (Eq. 14-16). ``pursuit`` fits each row of H_full with t rows of H_meta
by greedy orthogonal matching pursuit and least-squares weights, clipped at 0 and
left at their scale: top-t of a dense solve keeps the two largest of c coefficients
that were fitted together, which rebuilds H_full far worse (docs/design.md).

Under ``pinv`` the raw top-t weights of the pseudo-inverse solve are small (about 0.13 per
row on Gowalla) and can be negative; fed back as they are they shrink every
embedding. We clip them at zero and renormalize each row to sum 1, matching
the initial assignment's scale. A row whose top-t weights are all <= 0 keeps
its previous assignment. See docs/design.md.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.partition import rows_to_csr


def pseudo_inverse(h_meta: torch.Tensor) -> torch.Tensor:
    """Moore-Penrose inverse of H_meta (c x d -> d x c) through SVD (Eq. 12-13)."""
    return torch.linalg.pinv(h_meta.double()).to(h_meta.dtype)


def solve_rows(
    h_rows: torch.Tensor, h_meta_pinv: torch.Tensor, per_entity: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-t columns and weights of one block of H_full pinv(H_meta)."""
    dense = h_rows @ h_meta_pinv
    return torch.topk(dense, per_entity, dim=1)


def clip_and_normalize(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip negative weights to 0, rescale rows to sum 1; also return the rows left empty."""
    weights = np.clip(weights, 0.0, None)
    sums = weights.sum(axis=1, keepdims=True)
    empty = sums[:, 0] <= 0
    np.divide(weights, sums, out=weights, where=~empty[:, None])
    return weights, empty


def fit_codes(
    h_full: torch.Tensor, h_meta: torch.Tensor, codes: int, block_rows: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Each row of H_full as ``codes`` rows of H_meta with least-squares weights (greedy OMP).

    Step k picks the meta-embedding most correlated with what the first k - 1
    leave unexplained, then re-solves all k weights; row blocks keep memory at
    O(block c).
    """
    h_full, h_meta = h_full.double(), h_meta.double()
    norms = h_meta.norm(dim=1).clamp_min(1e-12)
    n = h_full.shape[0]
    columns = np.empty((n, codes), dtype=np.int64)
    weights = np.empty((n, codes), dtype=np.float32)
    for start in range(0, n, block_rows):
        target = h_full[start : start + block_rows]
        chosen = torch.empty((target.shape[0], 0), dtype=torch.long)
        residual, w = target, None
        for k in range(codes):
            pick = ((residual @ h_meta.T).abs() / norms).scatter(1, chosen, -1.0).argmax(dim=1)
            chosen = torch.cat([chosen, pick[:, None]], dim=1)
            basis = h_meta[chosen]  # rows x k x d
            gram = basis @ basis.transpose(1, 2) + 1e-9 * torch.eye(k + 1, dtype=basis.dtype)
            w = torch.linalg.solve(gram, basis @ target.unsqueeze(2)).squeeze(2)
            residual = target - (w.unsqueeze(2) * basis).sum(1)
        columns[start : start + block_rows] = chosen.numpy()
        weights[start : start + block_rows] = w.float().numpy()
    return columns, weights


def update_assignment(
    h_full: torch.Tensor,
    h_meta: torch.Tensor,
    previous: sp.csr_matrix,
    per_entity: int,
    solver: str = "pinv",
    block_rows: int = 8192,
) -> tuple[sp.csr_matrix, int]:
    """New sparse S from propagated embeddings, in row blocks so memory is O(n c).

    ``solver`` is a name in :data:`~legcf_core.config.SOLVERS`. Returns the new
    assignment and the number of rows that kept their old one.
    """
    if solver == "pursuit":
        columns, weights = fit_codes(h_full, h_meta, per_entity, block_rows)
        weights = np.clip(weights, 0.0, None)
        return _install(columns, weights, weights.sum(axis=1) <= 0, previous)
    pinv = pseudo_inverse(h_meta)
    n = h_full.shape[0]
    columns = np.empty((n, per_entity), dtype=np.int64)
    weights = np.empty((n, per_entity), dtype=np.float32)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        values, indices = solve_rows(h_full[start:stop], pinv, per_entity)
        columns[start:stop] = indices.cpu().numpy()
        weights[start:stop] = values.float().cpu().numpy()
    weights, empty = clip_and_normalize(weights)
    return _install(columns, weights, empty, previous)


def _install(
    columns: np.ndarray, weights: np.ndarray, empty: np.ndarray, previous: sp.csr_matrix
) -> tuple[sp.csr_matrix, int]:
    """S from N x t columns and weights; ``empty`` rows (no positive weight) keep ``previous``'s."""
    updated = rows_to_csr(columns, weights, previous.shape[1])
    if empty.any():
        updated = keep_rows(updated, previous, np.flatnonzero(empty))
    return updated, int(empty.sum())


def keep_rows(updated: sp.csr_matrix, previous: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """Replace ``rows`` of ``updated`` with those of ``previous``."""
    mask = np.zeros(updated.shape[0], dtype=np.float32)
    mask[rows] = 1.0
    keep_old = sp.diags(mask) @ previous
    keep_new = sp.diags(1.0 - mask) @ updated
    merged = (keep_new + keep_old).tocsr()
    merged.eliminate_zeros()
    merged.sort_indices()
    return merged.astype(np.float32)
