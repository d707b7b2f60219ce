"""Sharded training's graph: which rank owns which rows, and each rank's rows of P.

Why: in data-parallel training every rank holds the whole graph and the dense
(N+c) x c operator P, so memory per rank does not fall as ranks are added.
Here rank r owns a set of entity rows (whole METIS parts, cut into W blocks of
about equal rows + interactions), reads only its rows of the training matrix
from the run directory, and builds only its rows of

    P = (1/(L+1)) sum_l Ahat'^l [S; I]

Per layer each rank multiplies its rows of Ahat' by the previous layer's rows:
its own, the c meta rows (replicated: an all-reduce of every rank's partial
c x c sum S^T x) and the boundary rows other ranks own, which each owner
broadcasts in chunks of at most CHUNK_BYTES, so no rank ever holds all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open

from legcf_core.distributed import Group
from legcf_core.errors import ArtifactError
from legcf_core.runtime import release_freed_memory

CHUNK_BYTES = 64 << 20
"""Largest block of boundary rows one broadcast carries (and each rank holds at a time)."""
ROW_BLOCK = 65536
"""Rows per sparse-dense product, so its temporary stays at ROW_BLOCK x c."""
READ_CHUNK = 1 << 22
"""Training interactions read from the run directory at a time."""


def assign_owners(parts: np.ndarray, degrees: np.ndarray, world: int) -> np.ndarray:
    """Each entity's rank: whole parts in part order, cut into ``world`` contiguous blocks of about
    equal weight (rows + interactions), so that most of a row's neighbours share its rank."""
    weight = np.bincount(parts, weights=1.0 + degrees, minlength=int(parts.max(initial=0)) + 1)
    middle = np.cumsum(weight) - weight / 2  # each part's weight midpoint
    part_rank = np.minimum((middle * world / max(weight.sum(), 1.0)).astype(np.int64), world - 1)
    return part_rank[parts].astype(np.int32)


def entity_degrees(train: sp.csr_matrix) -> np.ndarray:
    """Interactions of every entity, users then items."""
    return np.concatenate([np.diff(train.indptr), np.bincount(train.indices, minlength=train.shape[1])])


@dataclass
class LocalRows:
    """What a rank reads of the training graph: its rows, and its users' positives."""

    own: np.ndarray  # global ids of the entities this rank owns, sorted
    adjacency: sp.csr_matrix  # their rows of A (binary), columns global ids
    user_items: sp.csr_matrix  # users x items, only the owned users' rows: the positives it samples


def interaction_chunks(path: Path, dataset: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(users, items) of the run's training interactions, READ_CHUNK at a time, read lazily from
    ``data.safetensors`` so no rank holds the whole matrix."""
    try:
        with safe_open(str(path), framework="np") as handle:
            if handle.metadata().get("dataset") != dataset:
                raise ArtifactError(f"{path} changed while training started; rerun the stage")
            indptr = handle.get_tensor("train.indptr").astype(np.int64)
            indices = handle.get_slice("train.indices")
            nnz = int(indptr[-1])
            for start in range(0, nnz, READ_CHUNK):
                items = np.asarray(indices[start : min(start + READ_CHUNK, nnz)], dtype=np.int64)
                positions = np.arange(start, start + items.size)
                yield np.searchsorted(indptr, positions, side="right") - 1, items
    except (SafetensorError, OSError, KeyError) as exc:
        raise ArtifactError(
            f"cannot read the training rows of {path} ({exc}); rerun 'legcf prepare'"
        ) from None


def csr_chunks(train: sp.csr_matrix) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(users, items) of an in-memory training matrix, in one chunk."""
    users = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr))
    yield users, train.indices.astype(np.int64)


def read_own_rows(
    chunks: Iterator[tuple[np.ndarray, np.ndarray]], owner: np.ndarray, rank: int, n_users: int
) -> LocalRows:
    """This rank's rows of A (its users' items and its items' users) and its users' positives."""
    n_items = owner.size - n_users
    by_user, by_item = [], []
    for users, items in chunks:
        mine = owner[users] == rank
        by_user.append((users[mine].astype(np.int32), items[mine].astype(np.int32)))
        mine = owner[items + n_users] == rank
        by_item.append((users[mine].astype(np.int32), items[mine].astype(np.int32)))
    user_u, user_i = (np.concatenate(part) for part in zip(*by_user, strict=True))
    item_u, item_i = (np.concatenate(part) for part in zip(*by_item, strict=True))
    own = np.flatnonzero(owner == rank)
    rows = np.searchsorted(own, np.concatenate([user_u, item_i + n_users])).astype(np.int32)
    columns = np.concatenate([user_i + n_users, item_u])
    ones = np.ones(rows.size, dtype=np.float32)
    adjacency = sp.csr_matrix((ones, (rows, columns)), shape=(own.size, owner.size))
    positives = sp.csr_matrix(
        (np.ones(user_u.size, dtype=np.float32), (user_u, user_i)), shape=(n_users, n_items)
    )
    return LocalRows(own, adjacency, positives)


class ShardOperator:
    """This rank's rows of P and the replicated meta rows, rebuilt whenever S changes."""

    def __init__(self, group: Group, rows: LocalRows, owner: np.ndarray, layers: int) -> None:
        self.group, self.rows, self.owner, self.layers = group, rows, owner, layers
        self.boundary, self.halo_position = self._boundary()
        self.entity: torch.Tensor | None = None  # this rank's rows of P
        self.meta: torch.Tensor | None = None  # P's c meta rows, on every rank
        self.meta_width = 0  # c

    def _boundary(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows some rank owns and another needs, by owner then id; each id's place among them."""
        columns = np.unique(self.rows.adjacency.indices)
        needed = torch.zeros(self.owner.size, dtype=torch.int32)
        needed[torch.from_numpy(columns[self.owner[columns] != self.group.rank])] = 1
        with self.group.guarded("finding the boundary rows"):
            dist.all_reduce(needed)
        boundary = np.flatnonzero(needed.numpy())
        boundary = boundary[np.argsort(self.owner[boundary], kind="stable")]
        position = np.full(self.owner.size, -1, dtype=np.int32)
        position[boundary] = np.arange(boundary.size, dtype=np.int32)
        return boundary, position

    def _all_reduce(self, array: np.ndarray, what: str) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        with self.group.guarded(what):
            dist.all_reduce(tensor)
        return tensor.numpy()

    def _normalized(self, assignment: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
        """This rank's rows of Ahat' = D^-1/2 A' D^-1/2, as its own, boundary and meta columns."""
        adjacency, own, n = self.rows.adjacency, self.rows.own, self.owner.size
        degree = np.zeros(n, dtype=np.float64)
        degree[own] = np.asarray(adjacency.sum(axis=1)).ravel() + np.asarray(assignment.sum(axis=1)).ravel()
        degree = self._all_reduce(degree, "summing the degrees")
        meta_degree = self._all_reduce(
            np.asarray(assignment.sum(axis=0), dtype=np.float64).ravel(), "summing S"
        )
        inv, inv_meta = _inverse_sqrt(degree), _inverse_sqrt(meta_degree)
        row_scale = np.repeat(inv[own], np.diff(adjacency.indptr))
        values = row_scale * adjacency.data * inv[adjacency.indices]
        rows = np.repeat(np.arange(own.size, dtype=np.int32), np.diff(adjacency.indptr))
        mine = self.owner[adjacency.indices] == self.group.rank
        inner = sp.csr_matrix(
            (values[mine], (rows[mine], np.searchsorted(own, adjacency.indices[mine]))), shape=(own.size,) * 2
        )
        halo_columns = self.halo_position[adjacency.indices[~mine]]
        halo = sp.csc_matrix(
            (values[~mine], (rows[~mine], halo_columns)), shape=(own.size, self.boundary.size)
        )
        meta = assignment.astype(np.float32, copy=True)
        meta.data = np.repeat(inv[own], np.diff(meta.indptr)) * meta.data * inv_meta[meta.indices]
        return inner, halo, meta

    def _chunks(self) -> Iterator[tuple[int, int, int]]:
        """(owner, start, stop) of each broadcast of boundary rows; the same list on every rank."""
        width = max(1, CHUNK_BYTES // (4 * max(self.meta_width, 1)))
        counts = np.bincount(self.owner[self.boundary], minlength=self.group.world_size)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for source in range(self.group.world_size):
            for start in range(int(offsets[source]), int(offsets[source + 1]), width):
                yield source, start, min(start + width, int(offsets[source + 1]))

    def build(self, assignment: sp.csr_matrix) -> None:
        """P's rows for this rank's S rows ``assignment`` (a collective: every rank builds at once).

        Horner's form, sum_{l=0..L} Ahat'^l X0 = X0 + Ahat'(X0 + Ahat'(... + Ahat' X0)), with the
        sparse X0 = [S; I] added row by row: two (owned rows) x c buffers and one chunk of
        boundary rows, where the sum written out holds three buffers.
        """
        self.entity = self.meta = None  # free the old P first
        self.meta_width = c = assignment.shape[1]
        inner, halo, meta_edges = self._normalized(assignment)
        blocks = [
            (source, start, stop, halo[:, start:stop].tocsr()) for source, start, stop in self._chunks()
        ]
        del halo
        release_freed_memory()  # the temporaries of normalizing, before the two big buffers
        rows = np.repeat(np.arange(assignment.shape[0]), np.diff(assignment.indptr))
        x = assignment.toarray().astype(np.float32, copy=False)
        x_meta = np.eye(c, dtype=np.float32)
        for _ in range(self.layers):
            y = np.zeros_like(x)
            _add_product(y, inner, x)
            _add_product(y, meta_edges, x_meta)
            for source, start, stop, block in blocks:
                _add_product(y, block, self._fetch(x, source, start, stop, c))
            np.add.at(y, (rows, assignment.indices), assignment.data)  # + X0's rows: S
            y_meta = self._all_reduce(np.asarray(meta_edges.T @ x, dtype=np.float32), "summing the meta rows")
            del x
            x, x_meta = y, y_meta + np.eye(c, dtype=np.float32)
        del y
        x /= self.layers + 1
        x_meta /= self.layers + 1
        self.entity, self.meta = torch.from_numpy(x), torch.from_numpy(x_meta)

    def _fetch(self, x: np.ndarray, source: int, start: int, stop: int, c: int) -> np.ndarray:
        """Boundary rows ``start:stop`` (all owned by ``source``) of the previous layer, from their owner."""
        buffer = torch.empty((stop - start, c), dtype=torch.float32)
        if source == self.group.rank:
            local = np.searchsorted(self.rows.own, self.boundary[start:stop])
            buffer.copy_(torch.from_numpy(x[local]))
        with self.group.guarded("exchanging boundary rows"):
            dist.broadcast(buffer, source)
        return buffer.numpy()

    def local_index(self, ids: np.ndarray) -> np.ndarray:
        """Positions of owned global ids among this rank's rows."""
        return np.searchsorted(self.rows.own, ids)


def _inverse_sqrt(degree: np.ndarray) -> np.ndarray:
    """d^-1/2 as float32, 0 where d is 0 (as :func:`~legcf_core.graph.normalize_symmetric`)."""
    inv = np.zeros(degree.size, dtype=np.float64)
    positive = degree > 0
    inv[positive] = degree[positive] ** -0.5
    return inv.astype(np.float32)


def _add_product(out: np.ndarray, matrix: sp.csr_matrix, dense: np.ndarray) -> None:
    """out += matrix @ dense, ROW_BLOCK rows at a time (a bounded temporary)."""
    if matrix.nnz == 0:
        return
    for start in range(0, matrix.shape[0], ROW_BLOCK):
        block = matrix[start : start + ROW_BLOCK]
        if block.nnz:
            out[start : start + ROW_BLOCK] += block @ dense
