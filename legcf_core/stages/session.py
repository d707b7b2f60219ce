"""Training inside a stage: a model, the data, the settings and progress, in one place.

:class:`Session` is what a layer's pretrain strategy talks to
(:class:`~legcf_core.layers.PretrainSession`) and what refine trains with. It
feeds the reporter the figures a user watches (loss per batch, loss and
validation NDCG@20 per epoch) and leaves the trained layer at its best state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from legcf_core.config import VALIDATION_METRIC, PretrainConfig, TrainConfig
from legcf_core.data import Interactions
from legcf_core.distributed import active, begin_job, processes_entry
from legcf_core.layers import EmbeddingLayer, Trained
from legcf_core.model import StoredModel, trainable
from legcf_core.progress import Reporter, Task
from legcf_core.registry import backbone_entry, backbone_type, resolve_backbone
from legcf_core.training import EpochLog, TrainResult, batch_count, fit, prune, validate

Baseline = tuple[dict[str, float], dict[str, torch.Tensor], Any]  # valid metrics, state, S


class Session:
    """Trains one stored model's layer and backbone on ``data`` with ``config``."""

    def __init__(
        self,
        model: StoredModel,
        data: Interactions,
        config: TrainConfig,
        device: torch.device,
        reporter: Reporter,
        label: str,
        run: Any = None,
    ) -> None:
        self.model = model
        self.run = run  # the run directory: sharded training's ranks read their rows from it
        self.data = data
        self.config = config
        self.device = device
        self.reporter = reporter
        self.label = label
        # --validation none: no validation split, so no early stopping and the last state is kept
        self.valid = None if data.validation == "none" else data.valid
        self.processes: dict[str, Any] = {}  # world_size and each rank's positives, for the manifest

    def _trainable(self, layer: EmbeddingLayer):
        self.model.layer = layer
        return trainable(self.model, self.data.train, self.data.n_users, self.device, self.reporter.note)

    def fit(self, layer: EmbeddingLayer) -> Trained:
        """BPR training with early stopping; the model keeps its best state."""
        result = self.train(layer)
        return Trained(
            layer,
            result.best_valid,
            result.best_epoch,
            result.history,
            {"stopped_early": result.stopped_early, **self.processes},
        )

    def train(
        self, layer: EmbeddingLayer, update_every: int | None = None, baseline: Baseline | None = None
    ) -> TrainResult:
        """:func:`~legcf_core.training.fit` with progress; installs the best state in the model.
        Launched by torchrun, the other ranks train alongside (:mod:`legcf_core.distributed`)."""
        group = active()
        if group is not None and group.sharded:
            model, parallel = self._sharded_job(layer, update_every, group)
        else:
            model = self._trainable(layer)
            self.note_sample()
            parallel = begin_job(self.model, self.data.train, self.config, update_every)
        with _Progress(self.reporter, self.label, self.config, self.data.train.nnz) as progress:
            result = fit(
                model,
                self.data.train,
                self.valid,
                self.config,
                update_every,
                baseline,
                progress.on_batch,
                progress.on_epoch,
                parallel,
            )
        self.processes = processes_entry(parallel, self.data.train.nnz * len(result.history))
        self.model.load_state(result.best_state, result.best_assignment)
        return result

    def _sharded_job(self, layer: EmbeddingLayer, update_every: int | None, group: Any) -> tuple[Any, Any]:
        """``--shard``: every rank builds and trains its rows of P (:mod:`legcf_core.sharded_training`)."""
        from legcf_core.sharded_training import begin_sharded, check_shardable
        from legcf_core.stages.inputs import load_partition_parts

        check_shardable(type(layer), type(self.model.backbone))
        self.model.layer = layer
        self.note_sample()
        parts = load_partition_parts(self.run, self.data.n_entities)
        return begin_sharded(self.model, self.run, self.data, self.config, update_every, parts, group)

    def prune(self, layer: EmbeddingLayer, budget: int) -> Trained:
        """PEP's pruning phase with progress; the layer keeps its last state."""
        check_if_sharded(type(layer), type(self.model.backbone))
        model = self._trainable(layer)
        parallel = begin_job(self.model, self.data.train, self.config, None)
        with _Progress(self.reporter, "prune", self.config, self.data.train.nnz) as progress:
            history, reached = prune(
                model,
                self.data.train,
                self.valid,
                self.config,
                budget,
                progress.on_batch,
                progress.on_epoch,
                parallel,
            )
        self.processes = processes_entry(parallel, self.data.train.nnz * len(history))
        if not reached:
            self.reporter.note(f"thresholds left more than {budget:,} entries; kept the largest {budget:,}")
        return Trained(
            layer, {}, history[-1].epoch, history, {"thresholds_reached_budget": reached, **self.processes}
        )

    def note_sample(self) -> None:
        """Say so when validation scores a sample of users (``--eval-users``), not all of them."""
        sample = self.config.eval_users
        if self.valid is None or sample is None:
            return
        everyone = int((np.diff(self.valid.indptr) > 0).sum())
        if sample < everyone:
            self.reporter.note(
                f"{self.label} validates on a seeded sample of {sample:,} of the {everyone:,} users "
                f"with validation items (--eval-users, seed {self.config.seed}), the same each epoch"
            )

    def validate(self, layer: EmbeddingLayer) -> dict[str, float]:
        return validate(
            self._trainable(layer), self.data.train, self.valid, self.config.eval_users, self.config.seed
        )


def concrete_backbone(config: PretrainConfig) -> PretrainConfig:
    """``config`` with its backbone as named, or for ``auto`` the embedding's default under this
    process's training (:func:`~legcf_core.registry.resolve_backbone`; sharded training takes
    LightGCN)."""
    group = active()
    sharded = group is not None and group.sharded
    return replace(config, backbone=resolve_backbone(config.backbone, config.embedding, sharded))


def refuse_unshardable(layer: type, backbone: str) -> None:
    """Before any work: an unknown backbone fails, and under ``--shard`` so does a layer or
    backbone that sharded training cannot train (one line, not after prepare and partition)."""
    backbone_entry(backbone)
    check_if_sharded(layer, backbone_type(backbone))


def check_if_sharded(layer: type, backbone: type) -> None:
    """Under ``--shard``, refuse a layer or backbone that sharded training cannot train."""
    group = active()
    if group is not None and group.sharded:
        from legcf_core.sharded_training import check_shardable

        check_shardable(layer, backbone)


class _Progress:
    """Epoch and batch bars with the figures a user watches, and the callbacks that feed them."""

    def __init__(self, reporter: Reporter, label: str, config: TrainConfig, n_positives: int) -> None:
        self.reporter, self.label = reporter, label
        self.epochs: Task = reporter.task(
            f"{label} epochs", config.epochs, loss=float("nan"), ndcg=float("nan")
        )
        self.batches: Task = reporter.task(
            f"{label} batches", batch_count(n_positives, config.batch_size), loss=float("nan")
        )
        self.on_batch: Callable[[float], None] = lambda loss: self.batches.advance(1, loss=loss)

    def on_epoch(self, log: EpochLog) -> None:
        fields: dict[str, Any] = {"loss": log.loss}
        if log.valid is not None:
            fields["ndcg"] = log.valid[VALIDATION_METRIC]
        self.epochs.advance(1, **fields)
        self.batches.update(completed=0)
        self.reporter.log(epoch_line(self.label, log))

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.batches.close()
        self.epochs.close()


def epoch_line(label: str, log: EpochLog) -> str:
    """One line of training history, e.g. for logs when stderr is not a terminal."""
    parts = [f"{label} epoch {log.epoch}", f"loss {log.loss:.4f}"]
    if log.valid is not None:
        parts.append(f"valid {VALIDATION_METRIC} {log.valid[VALIDATION_METRIC]:.4f}")
    if log.updated:
        parts.append(f"S updated ({log.kept_rows} rows kept)")
    if log.nonzeros is not None:
        parts.append(f"{log.nonzeros:,} entries above threshold")
    parts.append(f"{log.seconds:.1f}s")
    return "  ".join(parts)


def history_rows(logs: list[EpochLog]) -> list[dict[str, Any]]:
    """The per-epoch history a manifest entry keeps."""
    rows = []
    for log in logs:
        row = {
            "epoch": log.epoch,
            "loss": round(log.loss, 6),
            "seconds": round(log.seconds, 3),
            VALIDATION_METRIC: None if log.valid is None else round(log.valid[VALIDATION_METRIC], 6),
            "updated": log.updated,
        }
        if log.nonzeros is not None:
            row["nonzeros"] = log.nonzeros
        for phase in ("train", "update", "valid"):
            seconds = getattr(log, f"{phase}_seconds")
            if seconds is not None:
                row[f"{phase}_seconds"] = round(seconds, 3)
        rows.append(row)
    return rows
