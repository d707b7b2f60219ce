"""Initial assignments: METIS communities as anchors (Section 3.4), or random; the other
meta-embeddings are the parts an entity's edges reach most, or uniform draws (the paper)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymetis
import scipy.sparse as sp

from legcf_core.errors import ConfigError


@dataclass(frozen=True)
class Partition:
    """Part index of every entity, with METIS's edge cut (-1 for random)."""

    parts: np.ndarray
    edge_cut: int


def check_anchor_weight(anchor_weight: float, per_entity: int) -> None:
    """w* in (0, 1], and below 1 when t > 1 so every row keeps t nonzeros."""
    if not 0.0 < anchor_weight <= 1.0 or (per_entity > 1 and anchor_weight >= 1.0):
        upper = "1)" if per_entity > 1 else "1]"
        raise ConfigError(
            "anchor_weight", f"w* must lie in (0, {upper} with t={per_entity}, got {anchor_weight}"
        )


def check_sizes(n_entities: int, codebook_size: int, per_entity: int) -> None:
    """Reject c and t that cannot make a valid assignment."""
    if codebook_size < 1:
        raise ConfigError("codebook_size", f"c must be >= 1, got {codebook_size}")
    if codebook_size > n_entities:
        raise ConfigError("codebook_size", f"c={codebook_size} exceeds the number of entities N={n_entities}")
    if per_entity < 1:
        raise ConfigError("per_entity", f"t must be >= 1, got {per_entity}")
    if per_entity > codebook_size:
        raise ConfigError("per_entity", f"t={per_entity} exceeds codebook size c={codebook_size}")


def metis_partition(adjacency: sp.csr_matrix, n_parts: int, seed: int) -> Partition:
    """Partition the (symmetric) user-item graph into ``n_parts`` with METIS."""
    if n_parts == 1:
        return Partition(np.zeros(adjacency.shape[0], dtype=np.int64), 0)
    options = pymetis.Options(seed=seed)
    graph = pymetis.CSRAdjacency(adjacency.indptr.astype(np.int64), adjacency.indices.astype(np.int64))
    edge_cut, parts = pymetis.part_graph(n_parts, adjacency=graph, options=options)
    return Partition(np.asarray(parts, dtype=np.int64), int(edge_cut))


def random_partition(n_entities: int, n_parts: int, seed: int) -> Partition:
    """Anchors drawn uniformly at random: the paper's ablation of METIS."""
    rng = np.random.default_rng(seed)
    return Partition(rng.integers(0, n_parts, size=n_entities, dtype=np.int64), -1)


def initial_assignment(
    anchors: np.ndarray,
    codebook_size: int,
    per_entity: int,
    anchor_weight: float,
    seed: int,
    adjacency: sp.csr_matrix | None = None,
) -> sp.csr_matrix:
    """S0 of Section 3.4: weight w* on the anchor, (1-w*)/(t-1) on t-1 other meta-embeddings.

    The paper draws the t-1 others uniformly; given the graph's ``adjacency``
    they are the parts the entity's edges reach most (:func:`neighbor_others`),
    and uniform only where its edges reach too few other parts. They are
    distinct, so every row has exactly t nonzeros summing to 1; with t = 1 the
    anchor carries weight 1.
    """
    check_anchor_weight(anchor_weight, per_entity)
    n = anchors.size
    rng = np.random.default_rng(seed)
    given = None
    if adjacency is not None and per_entity > 1:
        given = neighbor_others(adjacency, anchors, codebook_size, per_entity - 1, rng)
    others = _distinct_others(anchors, codebook_size, per_entity - 1, rng, given)
    columns = np.concatenate([anchors[:, None], others], axis=1)
    weights = np.empty((n, per_entity), dtype=np.float32)
    weights[:, 0] = anchor_weight if per_entity > 1 else 1.0
    if per_entity > 1:
        weights[:, 1:] = (1.0 - anchor_weight) / (per_entity - 1)
    return rows_to_csr(columns, weights, codebook_size)


def neighbor_others(
    adjacency: sp.csr_matrix, anchors: np.ndarray, codebook_size: int, k: int, rng: np.random.Generator
) -> np.ndarray:
    """N x k: for each entity, the k parts other than its own that its edges reach most (ties
    broken at random); -1 fills the places of an entity whose edges reach fewer than k.

    Uniform draws pair each entity with a meta-embedding shared by entities it has nothing
    in common with; this pairs a boundary entity with the community it borders, and the
    entities of one part that border the same community with each other. ``adjacency`` is
    0/1, so a row of A @ onehot(parts) counts edges, and a draw in (0, 1] added to each
    count breaks ties without reordering counts. k rounds of a per-row maximum: linear in
    the nonzeros, where sorting them would take 16 s on a 16M-edge graph.
    """
    n = anchors.size
    onehot = sp.csr_matrix((np.ones(n, dtype=np.float32), (np.arange(n), anchors)), shape=(n, codebook_size))
    reach = (adjacency @ onehot).tocsr()  # reach[p, q]: edges from p into part q
    lengths = np.diff(reach.indptr)
    rows = np.repeat(np.arange(n), lengths)
    outside = (reach.indices != anchors[rows]) & (reach.data > 0)
    keys = np.full(reach.nnz, -np.inf)
    keys[outside] = reach.data[outside] + (1.0 - rng.random(int(outside.sum())))  # in (0, 1]
    out = np.full((n, k), -1, dtype=np.int64)
    filled = np.flatnonzero(lengths)
    for j in range(k if filled.size else 0):
        best = np.full(n, -np.inf)
        best[filled] = np.maximum.reduceat(keys, reach.indptr[filled])
        at = np.flatnonzero((keys == best[rows]) & np.isfinite(keys))
        owners, first = np.unique(rows[at], return_index=True)  # one per row, were keys ever equal
        out[owners, j] = reach.indices[at[first]]
        keys[at[first]] = -np.inf
    return out


def _distinct_others(
    anchors: np.ndarray, c: int, k: int, rng: np.random.Generator, given: np.ndarray | None = None
) -> np.ndarray:
    """k distinct meta-embeddings (columns of S) per row, none equal to the row's anchor:
    ``given``'s where it has them (-1 marks a place to fill, only after the given ones in
    a row), uniform draws elsewhere.

    Column by column, only the entries that repeat an earlier pick are
    redrawn, so even t close to c finishes quickly.
    """
    n = anchors.size
    out = np.full((n, k), -1, dtype=np.int64) if given is None else given.copy()
    for j in range(k):
        todo = np.flatnonzero(out[:, j] < 0)
        column = rng.integers(0, c - 1, size=todo.size)
        while True:
            candidate = column + (column >= anchors[todo])  # skip the anchor
            clash = (out[todo, :j] == candidate[:, None]).any(axis=1)
            if not clash.any():
                break
            column[clash] = rng.integers(0, c - 1, size=int(clash.sum()))
        out[todo, j] = candidate
    return out


def rows_to_csr(columns: np.ndarray, weights: np.ndarray, n_columns: int) -> sp.csr_matrix:
    """An N x c CSR matrix from per-row column indices and weights (zeros dropped). The arrays
    are copied: scipy would otherwise sort and compact them in place, under the caller's feet."""
    n, t = columns.shape
    matrix = sp.csr_matrix(
        (weights.ravel().copy(), columns.ravel().copy(), np.arange(0, n * t + 1, t)), shape=(n, n_columns)
    )
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix.astype(np.float32)
