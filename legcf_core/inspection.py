"""What a compressed model is made of: parameter counts, bytes, sparsity, usage."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from legcf_core.sizing import reference_width


def embedding_params(codebook_shape: tuple[int, int], assignment: sp.csr_matrix) -> int:
    """c*d + nnz(S): the numbers a LEGCF embedding layer stores."""
    return int(codebook_shape[0] * codebook_shape[1] + assignment.nnz)


def embedding_bytes(codebook_shape: tuple[int, int], assignment: sp.csr_matrix) -> int:
    """Bytes of a float32 codebook plus S as CSR (int64 indptr, int32 indices, float32 data)."""
    c, d = codebook_shape
    return int(4 * c * d + 8 * (assignment.shape[0] + 1) + 8 * assignment.nnz)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"min": 0.0, "p25": 0.0, "median": 0.0, "p75": 0.0, "max": 0.0, "mean": 0.0}
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        "min": round(float(q[0]), 6),
        "p25": round(float(q[1]), 6),
        "median": round(float(q[2]), 6),
        "p75": round(float(q[3]), 6),
        "max": round(float(q[4]), 6),
        "mean": round(float(values.mean()), 6),
    }


def anchors(assignment: sp.csr_matrix) -> np.ndarray:
    """Each row's highest-weighted meta-embedding, its anchor (-1 for an empty row)."""
    out = np.full(assignment.shape[0], -1, dtype=np.int64)
    counts = np.diff(assignment.indptr)
    rows = np.flatnonzero(counts > 0)
    out[rows] = np.asarray(assignment[rows].argmax(axis=1)).ravel()
    return out


def size_summary(n_entities: int, n_users: int, dim: int, params: int, stored_bytes: int) -> dict[str, Any]:
    """The sizes every layer's inspect summary shares, against the full table it replaces: of
    width max(d, 128), as partition's sizing counts it, so a 64-d LEGCF reports the compression
    its sizing note stated; in numbers stored and in bytes."""
    width = reference_width(dim)
    full = n_entities * width
    return {
        "entities": n_entities,
        "users": n_users,
        "items": n_entities - n_users,
        "dim": dim,
        "params": params,
        "full_table_dim": width,
        "full_table_params": full,
        "compression_ratio": round(full / params, 2) if params else None,
        "bytes": stored_bytes,
        "full_table_bytes": 4 * full,
        "compression_ratio_bytes": round(4 * full / stored_bytes, 2) if stored_bytes else None,
    }


def describe(
    codebook_shape: tuple[int, int],
    assignment: sp.csr_matrix,
    n_users: int,
    known_anchors: np.ndarray | None = None,
) -> dict[str, Any]:
    """The summary ``legcf inspect`` prints for one model.

    ``known_anchors`` (the METIS parts of an initial S) replaces the argmax,
    which cannot tell the anchor apart when w* = 1 - w* = 0.5.
    """
    c, d = codebook_shape
    n = assignment.shape[0]
    per_row = np.diff(assignment.indptr)
    column_use = np.bincount(assignment.indices, minlength=c)
    anchor_of = anchors(assignment) if known_anchors is None else known_anchors
    anchor_use = np.bincount(anchor_of[per_row > 0], minlength=c)
    params, stored = embedding_params(codebook_shape, assignment), embedding_bytes(codebook_shape, assignment)
    return {
        **size_summary(n, n_users, d, params, stored),
        "meta_embeddings": c,
        "per_entity": int(per_row.max(initial=0)),
        "nnz": int(assignment.nnz),
        "nonzeros_per_row": {str(k): int(v) for k, v in enumerate(np.bincount(per_row)) if v},
        "meta_embeddings_used": int((column_use > 0).sum()),
        "meta_embeddings_unused": int((column_use == 0).sum()),
        "anchors_used": int((anchor_use > 0).sum()),
        "entities_per_anchor": _quantiles(anchor_use[anchor_use > 0].astype(np.float64)),
        "weights": _quantiles(assignment.data.astype(np.float64)),
        "row_weight_sums": _quantiles(np.asarray(assignment.sum(axis=1)).ravel()),
    }
