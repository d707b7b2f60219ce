"""Data-parallel BPR training: each process's share of every batch, and a worker's side of
:func:`~legcf_core.training.fit`.

Every process draws the same batch order and negatives from the seed (the
same stream one process would draw), takes a contiguous slice of each batch,
and the slices' gradients, each scaled by the slice's share of the batch, are
summed across processes. The sum is the gradient of the whole batch's mean
loss, so two processes follow one process's run up to float rounding, at the
same settings (``--batch-size`` is the global batch).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.bpr import batch_objective
from legcf_core.config import TrainConfig
from legcf_core.distributed import Group
from legcf_core.schedule import adam, decay_lr, follow_schedule
from legcf_core.training import NegativeSampler, TrainableModel, train_epoch


def parallel_step(
    model: TrainableModel,
    batch: tuple[np.ndarray, np.ndarray, np.ndarray],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    parallel: Group,
) -> float:
    """One optimizer step on this process's slice of ``batch``; returns the whole batch's loss.

    The slice's objective is scaled by its share of the batch, so the summed
    gradient is the gradient of the whole batch's mean loss, as one process
    would take it.
    """
    users, items, negatives = (part[parallel.shard(batch[0].size)] for part in batch)
    optimizer.zero_grad(set_to_none=True)
    value = 0.0
    if users.size:
        objective = batch_objective(model, users, items, negatives, config.l2) * (users.size / batch[0].size)
        objective.backward()
        value = float(objective.detach())
    total = parallel.sum_gradients(model.parameters(), value, users.size)
    optimizer.step()
    return total


def follow(
    model: TrainableModel,
    train: sp.csr_matrix,
    config: TrainConfig,
    update_every: int | None,
    parallel: Group,
) -> None:
    """A worker process's side of :func:`fit` (and :func:`prune`): the same epochs and steps,
    S and every stop and lr decision from rank 0, which alone validates."""
    torch.manual_seed(config.seed)
    sampler = NegativeSampler(train, config.negatives, config.seed)
    optimizer = adam(model.parameters(), config.lr)
    for epoch in range(1, config.epochs + 1):
        follow_schedule(optimizer, config, epoch)
        train_epoch(model, sampler, optimizer, config, None, parallel)
        if update_every is not None and (epoch - 1) % update_every == 0:
            parallel.share_assignment(model)
        stop, decayed = parallel.decide()
        if decayed:
            decay_lr(optimizer, config.lr_decay)
        if stop:
            return
