"""The compact serving form of a trained model: what scoring needs, as few bytes as it takes.

For a layer with an assignment (LEGCF) the paper's own constraint
H_full ~ S H_meta (Eq. 10) gives the form: the c propagated meta-embeddings
H_meta and, per entity, t meta-embedding columns and weights, O(c d + N t)
numbers. The training S is a poor fit for this (its rows were solved for
layer-0 embeddings, clipped and renormalized: on the demo, scoring with
S H_meta kept a quarter of the exact NDCG@20), so the serving S is fitted to
H_full itself: t columns chosen greedily (orthogonal matching pursuit) with
least-squares weights, which kept 92% at t = 2 and 97% at t = 4.
Every other layer stores its propagated rows H (N x d), exact but not small.

Options: a lower precision for the real-valued tensors (float16, or bfloat16
kept as its raw 16 bits in an int16 tensor), and whether to keep the training interactions,
which serving needs to leave out items a user already has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.config import DTYPES
from legcf_core.errors import ConfigError


@dataclass
class CompactForm:
    """Propagated rows or meta rows + assignment, ready to write or to score with."""

    meta_rows: np.ndarray | None  # c x d, when the model has an assignment
    columns: np.ndarray | None  # N x t meta-embedding indices
    weights: np.ndarray | None  # N x t weights
    rows: np.ndarray | None  # N x d propagated rows, when it has none

    def entity_rows(self) -> np.ndarray:
        """H of every entity: stored rows, or S H_meta."""
        if self.rows is not None:
            return self.rows.astype(np.float32)
        meta = self.meta_rows.astype(np.float32)
        return np.einsum("nt,ntd->nd", self.weights.astype(np.float32), meta[self.columns])


def assignment_columns(assignment: sp.csr_matrix, per_entity: int) -> tuple[np.ndarray, np.ndarray]:
    """S as N x t arrays of columns and weights; rows with fewer nonzeros are padded with weight 0."""
    n = assignment.shape[0]
    columns = np.zeros((n, per_entity), dtype=np.int64)
    weights = np.zeros((n, per_entity), dtype=np.float32)
    counts = np.diff(assignment.indptr)
    slot = np.arange(assignment.nnz) - np.repeat(assignment.indptr[:-1], counts)
    rows = np.repeat(np.arange(n), counts)
    columns[rows, slot] = assignment.indices
    weights[rows, slot] = assignment.data
    return columns, weights


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


def compact_form(outputs: torch.Tensor, n_entities: int, codes: int | None) -> CompactForm:
    """The serving form from a model's propagated outputs (all nodes of its graph): with
    ``codes``, each entity as that many meta rows (the outputs after the N entities)."""
    h = outputs.detach().cpu().float()
    if codes is None:
        return CompactForm(None, None, None, h[:n_entities].numpy())
    columns, weights = fit_codes(h[:n_entities], h[n_entities:], codes)
    return CompactForm(h[n_entities:].numpy(), columns, weights, None)


def index_dtype(upper: int) -> np.dtype:
    """The smallest integer dtype that holds 0..upper."""
    for dtype in (np.uint8, np.uint16, np.int32):
        if upper <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def to_stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """Real values in the stored precision; bfloat16 as its raw bits in int16 (numpy has no bfloat16)."""
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"{dtype!r} is unknown; expected one of {', '.join(DTYPES)}")
    if dtype == "bfloat16":
        return (
            torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
            .bfloat16()
            .view(torch.int16)
            .numpy()
        )
    return values.astype(dtype)


def from_stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """Inverse of :func:`to_stored`, as float32."""
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(values)).view(torch.bfloat16).float().numpy()
    return values.astype(np.float32)


def form_arrays(form: CompactForm, dtype: str) -> dict[str, np.ndarray]:
    """The tensors of a compact file, real numbers in ``dtype``, indices as narrow as they fit."""
    if form.rows is not None:
        return {"rows": to_stored(form.rows, dtype)}
    return {
        "meta_rows": to_stored(form.meta_rows, dtype),
        "columns": form.columns.astype(index_dtype(form.meta_rows.shape[0] - 1)),
        "weights": to_stored(form.weights, dtype),
    }


def form_from_arrays(arrays: dict[str, np.ndarray], dtype: str) -> CompactForm:
    """Inverse of :func:`form_arrays`."""
    if "rows" in arrays:
        return CompactForm(None, None, None, from_stored(arrays["rows"], dtype))
    columns = arrays["columns"].astype(np.int64)
    weights = from_stored(arrays["weights"], dtype)
    return CompactForm(from_stored(arrays["meta_rows"], dtype), columns, weights, None)
