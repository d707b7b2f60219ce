"""The learning-rate schedules of training (``TrainConfig.lr_schedule``).

"plateau" is moved by validation (the training loop decays lr after an evaluation
without gain, and keeps it constant without validation); "cosine" is fixed in
advance, so a run without validation (``--validation none``) can still anneal.
"""

from __future__ import annotations

import math

import torch

from legcf_core.config import TrainConfig


def scheduled_lr(config: TrainConfig, epoch: int) -> float | None:
    """The learning rate of ``epoch`` (1-based) under a fixed schedule; None under "plateau",
    where validation moves it. Cosine: lr at epoch 1, a half cosine towards 0 after the last
    (the last epoch runs at about lr * (pi / 2E)^2 of E)."""
    if config.lr_schedule != "cosine":
        return None
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))


def follow_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int) -> None:
    """Set every parameter group's learning rate for ``epoch`` where the schedule is fixed."""
    lr = scheduled_lr(config, epoch)
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def decay_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Scale every parameter group's learning rate (after an evaluation without improvement)."""
    for group in optimizer.param_groups:
        group["lr"] *= factor


def adam(parameters: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam over ``parameters``, each at ``lr`` times its ``lr_scale`` attribute (1 where it has
    none: a backbone's layer weights train slower than the embeddings, backbones.MIX_LR_SCALE).
    Every group keeps its scale, so the schedules move all of them together."""
    by_scale: dict[float, list[torch.nn.Parameter]] = {}
    for parameter in parameters:
        by_scale.setdefault(float(getattr(parameter, "lr_scale", 1.0)), []).append(parameter)
    groups = [{"params": group, "lr": lr * scale, "lr_scale": scale} for scale, group in by_scale.items()]
    return torch.optim.Adam(groups, lr=lr)
