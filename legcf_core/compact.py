"""The compact serving form of a trained model: what scoring needs, as few bytes as it takes.

For a layer with an assignment (LEGCF) the paper's own constraint
H_full ~ S H_meta (Eq. 10) gives the form: the c propagated meta-embeddings
H_meta and, per entity, its t meta-embedding columns and weights, O(c d + N t)
numbers. Rows of S sum to 1, so only t - 1 weights per entity are stored.
Every other layer stores its propagated rows H (N x d), exact but not small.
Scores of the compact form are s_u H_meta . s_i H_meta, an approximation of
the exact model's (docs/results.md gives both forms' metrics).

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
    weights: np.ndarray | None  # N x t weights, rows summing to 1
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


def compact_form(
    outputs: torch.Tensor, n_entities: int, assignment: sp.csr_matrix | None, per_entity: int
) -> CompactForm:
    """The serving form from a model's propagated outputs (all nodes of its graph)."""
    h = outputs.detach().cpu().float().numpy()
    if assignment is None:
        return CompactForm(None, None, None, h[:n_entities])
    columns, weights = assignment_columns(assignment, per_entity)
    return CompactForm(h[n_entities:], columns, weights, None)


def index_dtype(upper: int) -> np.dtype:
    """The smallest integer dtype that holds 0..upper."""
    for dtype in (np.uint8, np.int16, np.int32):
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
    """The tensors of a compact file: at most t - 1 weights a row, indices as narrow as they fit."""
    if form.rows is not None:
        return {"rows": to_stored(form.rows, dtype)}
    c, t = form.meta_rows.shape[0], form.columns.shape[1]
    arrays = {
        "meta_rows": to_stored(form.meta_rows, dtype),
        "columns": form.columns.astype(index_dtype(c - 1)),
    }
    if t > 1:
        arrays["weights"] = to_stored(form.weights[:, :-1], dtype)
    return arrays


def form_from_arrays(arrays: dict[str, np.ndarray], dtype: str) -> CompactForm:
    """Inverse of :func:`form_arrays`: the last weight of each row is 1 minus the others."""
    if "rows" in arrays:
        return CompactForm(None, None, None, from_stored(arrays["rows"], dtype))
    columns = arrays["columns"].astype(np.int64)
    n, t = columns.shape
    stored = from_stored(arrays["weights"], dtype) if t > 1 else np.zeros((n, 0), np.float32)
    weights = np.concatenate([stored, 1.0 - stored.sum(axis=1, keepdims=True)], axis=1)
    return CompactForm(from_stored(arrays["meta_rows"], dtype), columns, weights, None)


def rows_sum_to_one(weights: np.ndarray, tolerance: float = 1e-4) -> bool:
    """Whether the t - 1 weights a row determine the last (true of every S legcf makes)."""
    return bool(np.all(np.abs(weights.sum(axis=1) - 1.0) <= tolerance))
