"""A small seeded bipartite graph with a partition and an assignment S, for sharding tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def small_graph(users: int = 120, items: int = 80, parts: int = 12, t: int = 2, seed: int = 7):
    """(train U x I, S (U+I) x c with t weights a row, each entity's part)."""
    rng = np.random.default_rng(seed)
    dense = rng.random((users, items)) < 0.06
    dense[np.arange(users), rng.integers(0, items, users)] = True
    train = sp.csr_matrix(dense.astype(np.float32))
    n = users + items
    part = rng.integers(0, parts, n)
    columns = np.column_stack([part, (part + 1 + rng.integers(0, parts - 1, n)) % parts])
    weights = np.column_stack([np.full(n, 0.7), np.full(n, 0.3)]).astype(np.float32)
    s = sp.csr_matrix((weights.ravel(), columns.ravel(), np.arange(0, n * t + 1, t)), shape=(n, parts))
    s.sort_indices()
    return train, s, part
