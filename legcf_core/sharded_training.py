"""Sharded training (``--shard``): LEGCF on LightGCN, each rank holding only its rows.

Why: data-parallel training (:mod:`legcf_core.parallel_training`) keeps the whole
graph and P on every rank. Here rank r holds its rows of the training graph, S
and P (:mod:`legcf_core.sharding`), plus the codebook E_meta and Adam's moments
(c x d, on every rank). A step:

1. each rank draws its share of the global batch from its own users' positives
   (so the negatives' check reads only its rows); one all-gather gives every
   rank the whole batch;
2. each rank computes H = P[rows] E_meta for the batch's distinct entities it
   owns; one all-reduce (sum) of the (distinct x d) buffer gives every rank all;
3. every rank computes the whole batch's BPR loss and dL/dH (the same on all),
   backpropagates into E_meta through its own rows of P and adds its rows' L2
   term; one all-reduce sums the gradient; every rank takes the same Adam step.

One rank (``--shard`` without torchrun) draws the stream one process draws, so it
trains as one process does up to the float rounding of P's build; W ranks draw W
seeded streams and agree with one process only statistically. The assignment
update is row-local: each rank re-solves its rows and rebuilds its rows of P;
rank 0 gathers S (N x t) for the stored model. Validation asks every rank for
the rows it owns, summed on rank 0.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from legcf_core import artifacts as art
from legcf_core.assignment import update_assignment
from legcf_core.bpr import batch_bpr, batch_counts
from legcf_core.config import TrainConfig
from legcf_core.distributed import Group
from legcf_core.errors import ConfigError, DistributedError
from legcf_core.layers.codebook import CodebookLayer, l2_gram
from legcf_core.runtime import release_freed_memory
from legcf_core.schedule import adam, decay_lr, follow_schedule
from legcf_core.sharding import LocalRows, ShardOperator, interaction_chunks, read_own_rows
from legcf_core.training import NegativeSampler, batch_count, train_epoch

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # users, items, negatives
MAX_BATCHES_ENV = "LEGCF_SHARD_MAX_BATCHES"
"""Bench knob: train at most this many batches an epoch (bench/shard_memory.py), 0 or unset: all."""
GATHER_ROWS = 65536
"""Rows of H summed on rank 0 at a time when validating."""


def check_shardable(layer: type, backbone: type) -> None:
    """Sharded training builds LEGCF's operator P row by row: only LEGCF on a fixed-operator
    backbone that takes the mean of its layers (LightGCN) has one."""
    if not (issubclass(layer, CodebookLayer) and backbone.fixed_operator and not backbone.mixes_layers):
        raise ConfigError(
            None,
            f"sharded training (--shard) trains LEGCF on LightGCN only (each rank builds its rows of the "
            f"operator P), not {layer.name} on {backbone.__name__}; train it without --shard "
            "(or on --backbone lightgcn)",
        )


class ShardedModel:
    """LEGCF on LightGCN through this rank's rows of P: what :func:`~legcf_core.training.fit`
    trains on rank 0, and every worker alongside it."""

    def __init__(self, group: Group, codebook: torch.Tensor, rows: LocalRows, assignment: sp.csr_matrix,
                 owner: np.ndarray, header: dict[str, Any], full: sp.csr_matrix | None) -> None:  # fmt: skip
        self.group, self.owner = group, owner
        self.codebook = torch.nn.Parameter(codebook.clone())
        self.operator = ShardOperator(group, rows, owner, int(header["layers"]))
        self.own_assignment = assignment  # this rank's rows of S
        self.full_assignment = full  # rank 0: all of S, for the stored model
        self.n_users, self.n_entities = int(header["n_users"]), owner.size
        self.per_entity, self.solver = int(header["per_entity"]), str(header["solver"])
        self.device = torch.device("cpu")
        self.operator.build(assignment)

    @property
    def assignment(self) -> sp.csr_matrix | None:
        return self.full_assignment

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.codebook]

    def state(self) -> dict[str, torch.Tensor]:
        return {"codebook": self.codebook.detach().cpu().clone()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.codebook.copy_(state["codebook"])

    def own_outputs(self, ids: np.ndarray, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """H at owned ``ids``, P[ids] E_meta, and their L2 sum tr(E^T S^T diag(counts) S E)."""
        local = self.operator.local_index(ids)
        h = self.operator.entity.index_select(0, torch.from_numpy(local)) @ self.codebook
        gram = torch.from_numpy(l2_gram(self.own_assignment[local], counts))
        return h, (self.codebook * (gram @ self.codebook)).sum()

    def entity_rows(self, rows: np.ndarray) -> torch.Tensor:
        """Rank 0: H at ``rows``, each row from the rank that owns it (every rank joins in)."""
        self.group.send({"op": "rows"}, {"rows": rows}, "asking for the rows to validate")
        return self._summed(rows)

    def entity_embeddings(self) -> torch.Tensor:
        return self.entity_rows(np.arange(self.n_entities))

    def serve_rows(self) -> None:
        """A worker's side of :meth:`entity_rows`."""
        _, arrays = self.group.receive("waiting for the rows to validate")
        self._summed(arrays["rows"])

    def _summed(self, rows: np.ndarray) -> torch.Tensor | None:
        """H at ``rows``, summed on rank 0 (None elsewhere) GATHER_ROWS at a time."""
        parts = []
        for start in range(0, rows.size, GATHER_ROWS):
            ids = rows[start : start + GATHER_ROWS]
            buffer = torch.zeros((ids.size, self.codebook.shape[1]), dtype=torch.float32)
            mine = torch.from_numpy(self.owner[ids] == self.group.rank)
            with torch.no_grad():
                buffer[mine] = self.own_outputs(ids[mine.numpy()], np.zeros(int(mine.sum())))[0]
            with self.group.guarded("gathering rows of H"):
                dist.reduce(buffer, 0)
            parts.append(buffer)
        return torch.cat(parts) if self.group.leader and parts else None

    def update_assignment(self) -> int:
        """Every rank re-solves its own rows of S (row-local) and rebuilds its rows of P; rank 0
        gathers S. Returns the rows that kept their old S, over all ranks."""
        with torch.no_grad():
            h_own = self.operator.entity @ self.codebook
            h_meta = self.operator.meta @ self.codebook
        updated, kept = update_assignment(h_own, h_meta, self.own_assignment, self.per_entity, self.solver)
        del h_own
        self.own_assignment = updated
        self.operator.build(updated)
        self.full_assignment = gather_assignment(self.group, updated, self.owner)
        total = torch.tensor([kept], dtype=torch.int64)
        with self.group.guarded("counting the rows kept"):
            dist.all_reduce(total)
        return int(total[0])


def gather_assignment(group: Group, own: sp.csr_matrix, owner: np.ndarray) -> sp.csr_matrix | None:
    """All of S on rank 0 (None elsewhere), from every rank's rows."""
    what = "gathering S"
    if not group.leader:
        with group.guarded(what):
            dist.send(torch.tensor([own.nnz], dtype=torch.int64), 0)
            for array in (
                np.diff(own.indptr).astype(np.int64),
                own.indices.astype(np.int64),
                own.data.astype(np.float32),
            ):
                dist.send(torch.from_numpy(np.ascontiguousarray(array)), 0)
        return None
    pieces = [(np.diff(own.indptr), own.indices.astype(np.int64), own.data)]
    for source in range(1, group.world_size):
        nnz = torch.zeros(1, dtype=torch.int64)
        with group.guarded(what):
            dist.recv(nnz, source)
            arrays = (
                torch.zeros(int((owner == source).sum()), dtype=torch.int64),
                torch.zeros(int(nnz[0]), dtype=torch.int64),
                torch.zeros(int(nnz[0]), dtype=torch.float32),
            )
            for array in arrays:
                dist.recv(array, source)
        pieces.append(tuple(a.numpy() for a in arrays))
    rows = [np.repeat(np.flatnonzero(owner == rank), piece[0]) for rank, piece in enumerate(pieces)]
    columns, values = (np.concatenate([piece[i] for piece in pieces]) for i in (1, 2))
    full = sp.csr_matrix((values, (np.concatenate(rows), columns)), shape=(owner.size, own.shape[1]))
    full.sort_indices()
    return full.astype(np.float32)


class ShardSampler:
    """This rank's share of every global batch, drawn from its own users' positives, and the
    whole batch gathered from every rank's share."""

    def __init__(self, positives: sp.csr_matrix, config: TrainConfig, group: Group, total: int) -> None:
        self.local = NegativeSampler(positives, config.negatives, config.seed)
        if group.world_size > 1:  # one stream a rank; one rank draws the single process's stream
            self.local.rng = np.random.default_rng([config.seed, group.rank])
        self.group, self.total = group, total
        self.limit = max_batches()

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The epoch's global batches, as many on every rank (``batch_count`` of all positives)."""
        n, total = self.local.users.size, self.total
        order = self.local.rng.permutation(n)
        count = batch_count(total, batch_size)
        for j in range(count if self.limit is None else min(count, self.limit)):
            chosen = order[j * batch_size * n // total : min(n, (j + 1) * batch_size * n // total)]
            users = self.local.users[chosen]
            yield self._gathered(users, self.local.items[chosen], self.local.sample_negatives(users))

    def _gathered(self, users: np.ndarray, items: np.ndarray, negatives: np.ndarray) -> Batch:
        """The global batch: every rank's share, rank 0's first."""
        mine = torch.from_numpy(np.column_stack([users, items, negatives]).astype(np.int64))
        sizes = torch.zeros(self.group.world_size, dtype=torch.int64)
        sizes[self.group.rank] = users.size
        with self.group.guarded("sharing the batch"):
            dist.all_reduce(sizes)
            padded = torch.zeros((int(sizes.max()), mine.shape[1]), dtype=torch.int64)
            padded[: users.size] = mine
            shares = [torch.empty_like(padded) for _ in range(self.group.world_size)]
            dist.all_gather(shares, padded)
        whole = torch.cat([share[: int(size)] for share, size in zip(shares, sizes, strict=True)]).numpy()
        return whole[:, 0], whole[:, 1], whole[:, 2:]


def max_batches() -> int | None:
    """The bench knob ``LEGCF_SHARD_MAX_BATCHES`` (None: every batch)."""
    value = os.environ.get(MAX_BATCHES_ENV, "0") or "0"
    try:
        limit = int(value)
    except ValueError:
        raise DistributedError(
            f"environment variable {MAX_BATCHES_ENV}={value!r} is not an integer"
        ) from None
    return limit if limit > 0 else None


class ShardGroup:
    """What :func:`~legcf_core.training.fit` asks of its processes, for a sharded job."""

    def __init__(self, group: Group, model: ShardedModel, sampler: ShardSampler) -> None:
        self.group, self.model, self.own_sampler = group, model, sampler

    def sampler(self, train: Any, negatives: int, seed: int) -> ShardSampler:
        """The batches: each rank's share from its own users (set up with the job; the arguments,
        which one process's stream would be drawn from, are not read)."""
        return self.own_sampler

    def step(
        self, model: ShardedModel, batch: Batch, optimizer: torch.optim.Optimizer, config: TrainConfig
    ) -> float:
        return sharded_step(model, batch, optimizer, config, self.group)

    def share_assignment(self, model: ShardedModel) -> int:
        return model.update_assignment()

    def decide(self, stop: bool = False, decayed: bool = False) -> tuple[bool, bool]:
        return self.group.decide(stop, decayed)

    def manifest_entry(self) -> dict[str, Any]:
        """The job's processes, as every rank reports them: positives, owned rows, peak RSS."""
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stats = torch.zeros((3, self.group.world_size), dtype=torch.int64)
        stats[:, self.group.rank] = torch.tensor(
            [self.group.positives, self.model.operator.rows.own.size, peak_kb]
        )
        with self.group.guarded("gathering each rank's figures"):
            dist.all_reduce(stats, group=self.group.control)
        self.group.in_job = False
        positives, rows, peaks = stats.tolist()
        return {
            "world_size": self.group.world_size,
            "backend": self.group.backend,
            "mode": "sharded",
            "rank_positives": positives,
            "rank_rows": rows,
            "rank_peak_rss_mb": [round(kb / 1024) for kb in peaks],
        }


def sharded_step(
    model: ShardedModel, batch: Batch, optimizer: torch.optim.Optimizer, config: TrainConfig, group: Group
) -> float:
    """One Adam step on the global ``batch`` through this rank's rows (module docstring); the loss."""
    users, items, negatives = batch
    b, n_users = users.size, model.n_users
    optimizer.zero_grad(set_to_none=True)
    counts = batch_counts(model.n_entities, n_users, users, items, negatives)
    rows = np.flatnonzero(counts)
    index = torch.from_numpy(
        np.searchsorted(rows, np.concatenate([users, items + n_users, negatives.ravel() + n_users]))
    )
    mine = model.owner[rows] == group.rank
    h_own, l2_sum = model.own_outputs(rows[mine], counts[rows[mine]])
    mask = torch.from_numpy(mine)
    h = torch.zeros((rows.size, model.codebook.shape[1]), dtype=torch.float32)
    h[mask] = h_own.detach()
    with group.guarded("sharing the batch's rows of H"):
        dist.all_reduce(h)
    h.requires_grad_(True)
    bpr = batch_bpr(h, index[:b], index[b : 2 * b], index[2 * b :].view(b, -1))
    bpr.backward()
    l2_term = l2_sum * (config.l2 / (2 * b))
    ((h_own * h.grad[mask]).sum() + l2_term).backward()
    value = float(l2_term.detach()) + (float(bpr.detach()) if group.leader else 0.0)
    drawn = int((model.owner[users] == group.rank).sum())  # a rank draws only its own users
    total = group.sum_gradients(model.parameters(), value, drawn)
    optimizer.step()
    return total


def begin_sharded(model: Any, run: Any, data: Any, config: TrainConfig, update_every: int | None,
                  parts: np.ndarray, group: Group) -> tuple[ShardedModel, ShardGroup]:  # fmt: skip
    """Rank 0: split the entities among the ranks, send the job, and start this rank's share."""
    from legcf_core.sharding import assign_owners, entity_degrees

    check_shardable(type(model.layer), type(model.backbone))
    layer, s = model.layer, model.layer.assignment
    owner = assign_owners(parts, entity_degrees(data.train), group.world_size)
    header = {
        "op": "shard",
        "config": asdict(config),
        "update_every": update_every,
        "validating": data.validation != "none" and data.valid is not None,
        "data": str(run.file(art.DATA_FILE)),
        "dataset": run.load_manifest()["dataset"]["fingerprint"],
        "n_users": data.n_users,
        "nnz": int(data.train.nnz),
        "layers": model.layers,
        "per_entity": layer.per_entity,
        "solver": layer.solver,
    }
    arrays = {"owner": owner, "codebook": layer.codebook.detach().cpu().numpy(),
              "s.indptr": s.indptr, "s.indices": s.indices, "s.data": s.data}  # fmt: skip
    group.positives, group.in_job = 0, True
    group.send(header, arrays, "sending a sharded training job")
    return start_shard(group, header, arrays, s)


def start_shard(group: Group, header: dict[str, Any], arrays: dict[str, np.ndarray],
                full: sp.csr_matrix | None = None) -> tuple[ShardedModel, ShardGroup]:  # fmt: skip
    """Every rank: read its rows from the run directory, take its rows of S, build its rows of P."""
    owner = arrays["owner"]
    chunks = interaction_chunks(Path(header["data"]), header["dataset"])
    rows = read_own_rows(chunks, owner, group.rank, int(header["n_users"]))
    c = arrays["codebook"].shape[0]
    s = sp.csr_matrix((arrays["s.data"], arrays["s.indices"], arrays["s.indptr"]), shape=(owner.size, c))
    own = s[rows.own].astype(np.float32)
    del s
    release_freed_memory()  # reading the rows' temporaries
    model = ShardedModel(group, torch.from_numpy(arrays["codebook"]), rows, own, owner, header, full)
    config = TrainConfig(**header["config"])
    sampler = ShardSampler(rows.user_items, config, group, int(header["nnz"]))
    return model, ShardGroup(group, model, sampler)


def follow_shard(group: Group, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """A worker's side of a sharded job: the same epochs as rank 0's :func:`fit`, its decisions."""
    group.positives, group.in_job = 0, True
    model, shard = start_shard(group, header, arrays)
    arrays.clear()  # all of S, as rank 0 sent it: this rank keeps its rows only
    config, update_every = TrainConfig(**header["config"]), header["update_every"]
    torch.manual_seed(config.seed)
    optimizer = adam(model.parameters(), config.lr)
    for epoch in range(1, config.epochs + 1):
        follow_schedule(optimizer, config, epoch)
        train_epoch(model, shard.own_sampler, optimizer, config, None, shard)
        if update_every is not None and (epoch - 1) % update_every == 0:
            model.update_assignment()
        if header["validating"] and (epoch % config.eval_every == 0 or epoch == config.epochs):
            model.serve_rows()
        stop, decayed = shard.decide()
        if decayed:
            decay_lr(optimizer, config.lr_decay)
        if stop:
            break
    shard.manifest_entry()
