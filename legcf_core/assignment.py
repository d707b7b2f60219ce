"""The closed-form assignment update: S <- top-t(H_full pinv(H_meta)) (Eq. 14-16).

The raw top-t weights of the pseudo-inverse solve are small (about 0.13 per
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


def update_assignment(
    h_full: torch.Tensor,
    h_meta: torch.Tensor,
    previous: sp.csr_matrix,
    per_entity: int,
    block_rows: int = 8192,
) -> tuple[sp.csr_matrix, int]:
    """New sparse S from propagated embeddings, in row blocks so memory is O(n c).

    Returns the new assignment and the number of rows that kept their old one.
    """
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
