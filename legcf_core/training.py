"""BPR training of a model (LEGCF or a baseline table on any backbone), with early stopping.

A batch holds ``batch_size`` training positives (u, i), each with
``negatives`` items the user never interacted with (uniform, rejection
sampled). The loss is

    mean_{(u,i,j)} softplus(h_u.h_j - h_u.h_i)
      + (lambda/2) mean_{(u,i)} (|e_u|^2 + |e_i|^2 + mean_j |e_j|^2)

with h = rows of the propagated H and e = rows of the layer-0 embeddings
(Eq. 4). The model computes the L2 sum (for LEGCF on LightGCN as
tr(E^T W E) with the c x c matrix W = S^T diag(n) S, so it costs O(c^2 d)
instead of composing every row of the batch). :func:`prune` is PEP's pruning
phase: train until the soft-thresholded table fits a parameter budget.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.bpr import batch_objective
from legcf_core.config import VALIDATION_METRIC, TrainConfig
from legcf_core.errors import TrainingError
from legcf_core.evaluation import evaluate, scored_users
from legcf_core.schedule import adam, decay_lr, follow_schedule

if TYPE_CHECKING:
    from legcf_core.distributed import Group

T = TypeVar("T")


class TrainableModel(Protocol):
    """What training needs of a model on a device (``legcf_core.model.trainable`` makes one)."""

    n_users: int
    n_entities: int
    device: torch.device

    @property
    def assignment(self) -> sp.csr_matrix | None: ...

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def outputs(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated entity rows H and the L2 sum over layer-0 rows weighted by ``counts``."""

    def row_outputs(self, rows: np.ndarray, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """H at ``rows`` only and the L2 sum, where the model can compute rows alone; else None."""

    def entity_rows(self, rows: np.ndarray) -> torch.Tensor | None:
        """H at ``rows`` only, where the model can compute rows alone; else None."""

    def entity_embeddings(self) -> torch.Tensor: ...

    def node_outputs(self) -> torch.Tensor:
        """Propagated rows of every node (entities, then any meta nodes)."""

    def update_assignment(self) -> int: ...

    def state(self) -> dict[str, torch.Tensor]: ...

    def load_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def stored_params(self) -> int: ...


@dataclass
class EpochLog:
    epoch: int
    loss: float
    seconds: float
    valid: dict[str, float] | None = None
    updated: bool = False
    kept_rows: int = 0
    nonzeros: int | None = None  # PEP pruning: entries still above the threshold
    train_seconds: float | None = None  # the epoch's parts: BPR steps, assignment update, validation
    update_seconds: float | None = None
    valid_seconds: float | None = None


def timed(work: Callable[[], T]) -> tuple[T, float]:
    """``work()``'s result and the seconds it took (each phase of an epoch, for the manifest)."""
    started = time.perf_counter()
    return work(), time.perf_counter() - started


@dataclass
class TrainResult:
    """The best state seen on validation and the history that led to it."""

    best_state: dict[str, torch.Tensor]
    best_assignment: sp.csr_matrix | None
    best_valid: dict[str, float]
    best_epoch: int
    history: list[EpochLog] = field(default_factory=list)
    stopped_early: bool = False


def batch_count(n_positives: int, batch_size: int) -> int:
    """Batches in one epoch over ``n_positives`` training pairs."""
    return math.ceil(n_positives / batch_size)


class NegativeSampler:
    """Shuffled training positives in batches, each with sampled negatives."""

    def __init__(self, train: sp.csr_matrix, negatives: int, seed: int) -> None:
        self.n_items = train.shape[1]
        self.users = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr))
        self.items = train.indices.astype(np.int64)
        self.keys = self.users * self.n_items + self.items  # sorted: CSR rows, sorted indices
        self.negatives = negatives
        self.rng = np.random.default_rng(seed)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        order = self.rng.permutation(self.users.size)
        for start in range(0, order.size, batch_size):
            chosen = order[start : start + batch_size]
            users, items = self.users[chosen], self.items[chosen]
            yield users, items, self.sample_negatives(users)

    def sample_negatives(self, users: np.ndarray) -> np.ndarray:
        """Items each user has not interacted with in training, ``negatives`` per user."""
        shape = (users.size, self.negatives)
        negatives = self.rng.integers(0, self.n_items, size=shape)
        pending = np.ones(shape, dtype=bool)
        for _ in range(100):
            pending = self.is_positive(users[:, None] * self.n_items + negatives)
            if not pending.any():
                break
            negatives[pending] = self.rng.integers(0, self.n_items, size=int(pending.sum()))
        return negatives

    def is_positive(self, keys: np.ndarray) -> np.ndarray:
        """Membership of user * n_items + item keys in the training set."""
        flat = keys.ravel()
        order = np.argsort(flat)  # sorted needles make searchsorted ~4x faster
        found = np.empty(flat.size, dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, flat[order]), self.keys.size - 1)
        found[order] = self.keys[pos] == flat[order]
        return found.reshape(keys.shape)


def train_epoch(
    model: TrainableModel,
    sampler: NegativeSampler,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    on_batch: Callable[[float], None] | None = None,
    parallel: Group | None = None,
) -> float:
    """One pass over all training positives; returns the mean batch loss. With ``parallel``,
    this process trains on its share of every batch
    (:func:`~legcf_core.parallel_training.parallel_step`)."""
    step = local_step if parallel is None else parallel.step
    total, batches = 0.0, 0
    for batch in sampler.batches(config.batch_size):
        value = step(model, batch, optimizer, config)
        if not math.isfinite(value):
            raise TrainingError(f"loss became {value}; lower the learning rate", "lr")
        total += value
        batches += 1
        if on_batch is not None:
            on_batch(value)
    return total / max(batches, 1)


def local_step(
    model: TrainableModel,
    batch: tuple[np.ndarray, np.ndarray, np.ndarray],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
) -> float:
    """One optimizer step on a batch of (users, items, negatives) in this process; its loss."""
    optimizer.zero_grad(set_to_none=True)
    objective = batch_objective(model, *batch, config.l2)
    objective.backward()
    optimizer.step()
    return float(objective.detach())


def validate(
    model: TrainableModel,
    train: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    sample: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Validation metrics of the current model, ranking every item; none without a validation
    split. ``sample``: a seeded sample of that many users (``--eval-users``), the same each
    epoch, and only their rows and the items' computed where the model can."""
    if valid is None:
        return {}
    users = scored_users(valid, sample, seed)
    n_users = model.n_users
    with torch.no_grad():
        h = None
        if users.size < n_users:
            h = model.entity_rows(np.concatenate([users, np.arange(n_users, model.n_entities)]))
        if h is None:
            h = model.entity_embeddings()
            return evaluate(h[:n_users], h[n_users:], train, valid, users=users)
        return evaluate(h[: users.size], h[users.size :], train, valid, users=users, rows_of_users=True)


def fit(
    model: TrainableModel,
    train: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    config: TrainConfig,
    update_every: int | None = None,
    baseline: tuple[dict[str, float], dict[str, torch.Tensor], sp.csr_matrix | None] | None = None,
    on_batch: Callable[[float], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    parallel: Group | None = None,
) -> TrainResult:
    """Train until ``config.epochs`` or ``patience`` evaluations without improvement.

    With ``update_every = m`` the assignment is re-solved after every m-th
    epoch (Algorithm 1, lines 6-12). ``baseline`` is the best state of an
    earlier stage: it is kept unless this run beats it on validation. Without a
    validation split (``valid`` None, ``--validation none``) every epoch runs, lr follows a fixed
    schedule only (``lr_schedule``), and the last state is the result. With ``parallel``
    (rank 0) the workers train alongside (:func:`~legcf_core.parallel_training.follow`).
    """
    torch.manual_seed(config.seed)
    sampler = (parallel.sampler if parallel else NegativeSampler)(train, config.negatives, config.seed)
    optimizer = adam(model.parameters(), config.lr)
    if baseline is None or valid is None:
        best = TrainResult(model.state(), model.assignment, {VALIDATION_METRIC: -1.0}, 0)
    else:
        best = TrainResult(dict(baseline[1]), baseline[2], baseline[0], 0)
    stale = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        follow_schedule(optimizer, config, epoch)
        log = EpochLog(epoch, train_epoch(model, sampler, optimizer, config, on_batch, parallel), 0.0)
        log.train_seconds = time.perf_counter() - started
        if update_every is not None and (epoch - 1) % update_every == 0:
            update = (
                model.update_assignment
                if parallel is None
                else functools.partial(parallel.share_assignment, model)
            )
            log.kept_rows, log.update_seconds = timed(update)
            log.updated = True
        decayed = False
        if valid is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            log.valid, log.valid_seconds = timed(
                functools.partial(validate, model, train, valid, config.eval_users, config.seed)
            )
            stale, decayed = judge(best, model, log, optimizer, config, stale)
        if parallel is not None:
            parallel.decide(stale >= config.patience, decayed)
        log.seconds = time.perf_counter() - started
        best.history.append(log)
        if on_epoch is not None:
            on_epoch(log)
        if stale >= config.patience:
            best.stopped_early = True
            break
    if valid is None:
        keep_best(best, model, best.history[-1])
        best.best_valid = {}
    return best


def judge(
    best: TrainResult,
    model: TrainableModel,
    log: EpochLog,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    stale: int,
) -> tuple[int, bool]:
    """Keep the model if it beat the best on validation; else count one more stale evaluation
    and, under the plateau schedule, decay lr. Returns the stale count and whether lr decayed."""
    if log.valid[VALIDATION_METRIC] > best.best_valid[VALIDATION_METRIC]:
        keep_best(best, model, log)
        return 0, False
    decays = config.lr_schedule == "plateau"
    if decays:
        decay_lr(optimizer, config.lr_decay)
    return stale + 1, decays


def keep_best(best: TrainResult, model: TrainableModel, log: EpochLog) -> None:
    """Make the model's current state, after ``log``'s epoch, the result."""
    best.best_state = model.state()
    best.best_assignment = model.assignment
    best.best_valid = log.valid or {}
    best.best_epoch = log.epoch


def prune(
    model: TrainableModel,
    train: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    config: TrainConfig,
    budget: int,
    on_batch: Callable[[float], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    parallel: Group | None = None,
) -> tuple[list[EpochLog], bool]:
    """PEP's pruning phase: train the soft-thresholded table until at most ``budget``
    entries survive, validation stops improving (``patience``; never without a validation
    split) or ``config.epochs`` pass; returns the history and whether the thresholds alone
    reached the budget."""
    torch.manual_seed(config.seed)
    sampler = NegativeSampler(train, config.negatives, config.seed)
    optimizer = adam(model.parameters(), config.lr)
    history: list[EpochLog] = []
    best, stale = -1.0, 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        follow_schedule(optimizer, config, epoch)
        log = EpochLog(epoch, train_epoch(model, sampler, optimizer, config, on_batch, parallel), 0.0)
        log.nonzeros = model.stored_params()
        if valid is not None and (epoch % config.eval_every == 0 or log.nonzeros <= budget):
            log.valid = validate(model, train, valid, config.eval_users, config.seed)
            if log.valid[VALIDATION_METRIC] > best:
                best, stale = log.valid[VALIDATION_METRIC], 0
            else:
                stale += 1
        if parallel is not None:
            parallel.decide(log.nonzeros <= budget or stale >= config.patience, False)
        log.seconds = time.perf_counter() - started
        history.append(log)
        if on_epoch is not None:
            on_epoch(log)
        if log.nonzeros <= budget:
            return history, True
        if stale >= config.patience:
            break
    return history, False
