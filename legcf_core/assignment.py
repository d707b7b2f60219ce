"""The assignment update: S re-solved from the propagated embeddings.

Three solvers (``--solver``). ``pinv`` is the paper's closed form, S <- top-t(H_full
pinv(H_meta)) (Eq. 14-16). ``pursuit`` fits each row of H_full with t rows of H_meta
by greedy orthogonal matching pursuit and least-squares weights, clipped at 0 and
left at their scale: top-t of a dense solve keeps the two largest of c coefficients
that were fitted together, which rebuilds H_full far worse (docs/design.md).
``pooled`` (the default) runs the same pursuit to 2t steps and shares the N t
weights among the rows where they cut the error most, so rows hold 1 to 2t codes
and S stores no more weights than at t a row.

Under ``pinv`` the raw top-t weights of the pseudo-inverse solve are small (about 0.13 per
row on Gowalla) and can be negative; fed back as they are they shrink every
embedding. We clip them at zero and renormalize each row to sum 1, matching
the initial assignment's scale. A row whose top-t weights are all <= 0 keeps
its previous assignment. See docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.partition import rows_to_csr

POOLED_MOST = 2
"""Under ``pooled`` a row keeps at most this many times t codes: on ml-1m at t = 2 about 1 row
in 12 takes 4, and capping there keeps the pursuit's cost at 2t steps."""


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


@dataclass(frozen=True)
class CodePath:
    """Greedy orthogonal matching pursuit run for K steps on every row.

    ``columns[:, k]`` is the meta-embedding step k picked, ``weights[:, k, :k+1]`` the
    least-squares weights of the first k + 1 picks, and ``errors[:, k]`` the squared error
    ||h - sum_j w_j m_j||^2 of those weights clipped at 0 (the weights S may hold).
    """

    columns: np.ndarray  # n x K, int64
    weights: np.ndarray  # n x K x K, float32 (zero above the step)
    errors: np.ndarray  # n x K, float64

    def at(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Columns and weights (n x K) when row i keeps its first ``counts[i]`` picks."""
        n, most = self.columns.shape
        weights = self.weights[np.arange(n), counts - 1, :].copy()
        weights[np.arange(most)[None, :] >= counts[:, None]] = 0.0
        return self.columns, weights


def pursue(h_full: torch.Tensor, h_meta: torch.Tensor, codes: int, block_rows: int = 8192) -> CodePath:
    """Each row of H_full fitted with 1, 2, ..., ``codes`` rows of H_meta (greedy OMP).

    Step k picks the meta-embedding most correlated with what the first k - 1
    leave unexplained, then re-solves all k weights; row blocks keep memory at
    O(block c).
    """
    h_full, h_meta = h_full.double(), h_meta.double()
    norms = h_meta.norm(dim=1).clamp_min(1e-12)
    n = h_full.shape[0]
    path = CodePath(
        np.empty((n, codes), dtype=np.int64),
        np.zeros((n, codes, codes), dtype=np.float32),
        np.empty((n, codes), dtype=np.float64),
    )
    for start in range(0, n, block_rows):
        block = slice(start, min(start + block_rows, n))
        _pursue_block(h_full[block], h_meta, norms, codes, path, block)
    return path


def _pursue_block(
    target: torch.Tensor, h_meta: torch.Tensor, norms: torch.Tensor, codes: int, path: CodePath, block: slice
) -> None:
    """:func:`pursue` on one block of rows, written into ``path`` at ``block``."""
    chosen = torch.empty((target.shape[0], 0), dtype=torch.long)
    residual, energy = target, (target * target).sum(1)
    for k in range(codes):
        pick = ((residual @ h_meta.T).abs() / norms).scatter(1, chosen, -1.0).argmax(dim=1)
        chosen = torch.cat([chosen, pick[:, None]], dim=1)
        basis = h_meta[chosen]  # rows x k x d
        gram = basis @ basis.transpose(1, 2) + 1e-9 * torch.eye(k + 1, dtype=basis.dtype)
        fit = basis @ target.unsqueeze(2)  # rows x k x 1
        w = torch.linalg.solve(gram, fit).squeeze(2)
        residual = target - (w.unsqueeze(2) * basis).sum(1)
        kept = w.clamp_min(0.0).unsqueeze(2)
        error = energy - 2 * (kept * fit).sum((1, 2)) + (kept.transpose(1, 2) @ gram @ kept).view(-1)
        path.errors[block, k] = error.numpy()
        path.weights[block, k, : k + 1] = w.float().numpy()
    path.columns[block] = chosen.numpy()


def fit_codes(
    h_full: torch.Tensor, h_meta: torch.Tensor, codes: int, block_rows: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Each row of H_full as ``codes`` rows of H_meta with least-squares weights (greedy OMP)."""
    path = pursue(h_full, h_meta, codes, block_rows)
    return path.columns, path.weights[:, -1, :]


def pool_codes(path: CodePath, per_entity: int) -> tuple[np.ndarray, np.ndarray]:
    """N t codes shared among the rows: each row keeps its first pick, and the other N (t - 1)
    go, one by one, to the rows whose next pick cuts the squared error most.

    A row that H_meta already rebuilds well gives its codes to one it does not, so S
    stores the same number of weights as t codes a row. Greedy on each row's gains,
    which pursuit makes nearly always decreasing; a row keeps between 1 and K codes.
    """
    n, most = path.columns.shape
    counts = np.ones(n, dtype=np.int64)
    gains = (path.errors[:, :-1] - path.errors[:, 1:]).ravel()
    order = np.argsort(-gains, kind="stable")[: n * (per_entity - 1)]
    order = order[gains[order] > 0]
    counts += np.bincount(order // max(most - 1, 1), minlength=n)[:n]
    return path.at(np.minimum(counts, most))


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
    if solver in ("pursuit", "pooled"):
        if solver == "pooled":
            most = min(POOLED_MOST * per_entity, h_meta.shape[0])
            columns, weights = pool_codes(pursue(h_full, h_meta, most, block_rows), per_entity)
        else:
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
