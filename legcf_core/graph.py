"""Graphs: the user-item adjacency A, the expanded graph A' and its normalization."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def bipartite_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """A = [[0, R], [R^T, 0]] over users then items (Eq. 2)."""
    return sp.bmat([[None, train], [train.T, None]], format="csr", dtype=np.float32)


def expanded_adjacency(adjacency: sp.csr_matrix, assignment: sp.csr_matrix) -> sp.csr_matrix:
    """A' = [[A, S], [S^T, 0]]: meta-embeddings become c extra nodes (Eq. 5)."""
    c = assignment.shape[1]
    zeros = sp.csr_matrix((c, c), dtype=np.float32)
    blocks = [[adjacency, assignment], [assignment.T, zeros]]
    return sp.bmat(blocks, format="csr", dtype=np.float32)


def normalize_symmetric(adjacency: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 (Eq. 7); nodes of zero degree get a zero row and column."""
    degree = np.asarray(adjacency.sum(axis=1), dtype=np.float64).ravel()
    inv_sqrt = np.zeros_like(degree)
    positive = degree > 0
    inv_sqrt[positive] = degree[positive] ** -0.5
    scale = sp.diags(inv_sqrt.astype(np.float32))
    normalized = (scale @ adjacency @ scale).tocsr()
    normalized.sort_indices()
    return normalized.astype(np.float32)
