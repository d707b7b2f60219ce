"""Refine: LEGCF alternates BPR epochs with assignment updates (matching pursuit, or the
paper's pinv) every m epochs (Algorithm 1); PEP retrains its pruned table from the initial
values."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch

from legcf_core import artifacts as art
from legcf_core.config import VALIDATION_METRIC, RefineConfig
from legcf_core.errors import ConfigError
from legcf_core.model import StoredModel, new_backbone
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.stages.inputs import load_data, load_trained
from legcf_core.stages.record import record_stage, rounded
from legcf_core.stages.session import Session, history_rows


def refine(
    run: art.RunDir, config: RefineConfig, device: torch.device, reporter: Reporter | None = None
) -> dict[str, Any]:
    """The best model on validation across pretrain and refine goes to ``refine.safetensors``;
    ``kept`` says which, and ``improved`` whether refine beat pretrain. Without a validation
    split (``--validation none``) refine's last model is kept and ``improved`` is None."""
    reporter = reporter or SilentReporter()
    config.check()
    with run.writing("refine"):
        data = load_data(run)
        pretrained, meta, pretrain_entry = load_trained(run, "pretrain", data.n_entities)
        model = refine_start(pretrained)
        start_layer = model.layer
        start_layer.solver = config.solver
        pretrain_valid = {
            k: v for k, v in pretrain_entry["metrics"].items() if k not in ("best_epoch", "params")
        }
        baseline = (pretrain_valid, pretrained.state(), pretrained.layer.assignment)
        started = time.perf_counter()
        update_every = config.update_every if start_layer.updates_assignment else None
        session = Session(model, data, config.train, device, reporter, "refine", run)
        result = session.train(start_layer, update_every, baseline)
        improved = kept_refine(data.validation, result.best_epoch, pretrain_valid, reporter)
        kept = "refine" if improved is not False else "pretrain"
        out_meta = art.header("model", dataset=meta["dataset"], kept=kept, **model.header())
        out = art.write_tensors(run.file(art.REFINE_FILE), model.arrays(), out_meta)
        metrics = {"best_epoch": result.best_epoch, VALIDATION_METRIC: None, **rounded(result.best_valid)}
        inputs = (
            (art.DATA_FILE, art.PARTITION_FILE, art.PRETRAIN_FILE)
            if start_layer.uses_partition
            else (art.DATA_FILE, art.PRETRAIN_FILE)
        )
        record_stage(
            run,
            "refine",
            config={
                "update_every": config.update_every,
                "solver": config.solver,
                **asdict(config.train),
                "device": str(device),
                "validation": data.validation,
            },
            inputs=inputs,
            outputs={art.REFINE_FILE: out},
            metrics=metrics,
            started=started,
            kept=kept,
            improved=improved,
            **{"pretrain_" + VALIDATION_METRIC: pretrain_valid[VALIDATION_METRIC]},
            rows_kept_at_update=[log.kept_rows for log in result.history if log.updated],
            history=history_rows(result.history),
            stopped_early=result.stopped_early,
            **session.processes,
        )
        return {**metrics, "kept": kept, "improved": improved}


def kept_refine(
    validation: str, best_epoch: int, pretrain_valid: dict[str, Any], reporter: Reporter
) -> bool | None:
    """Whether refine beat pretrain on validation (None: there is no validation split, and
    refine keeps its last model, as ``--validation none`` asks); notes the outcome."""
    if validation == "none":
        reporter.note(
            f"no validation split (--validation none): refine ran every epoch and keeps its last "
            f"model (epoch {best_epoch}); it was not compared with pretrain"
        )
        return None
    if best_epoch > 0:
        return True
    reporter.note(
        f"refine did not beat pretrain on validation {VALIDATION_METRIC} "
        f"({pretrain_valid[VALIDATION_METRIC]:.4f}); keeping the pretrained model"
    )
    return False


def refine_start(pretrained: StoredModel) -> StoredModel:
    """What refine trains: the layer's refine start (LEGCF: itself; PEP: the pruned pattern at its
    initial values) on the pretrained backbone, or a fresh one where the layer asks for it."""
    start_layer = pretrained.layer.refine_start()
    if start_layer is None:
        raise ConfigError(
            "embedding",
            f"{pretrained.embedding} has nothing to refine (only layers with an assignment or a pruned "
            "table do); evaluate its pretrain model",
        )
    backbone = pretrained.backbone
    if start_layer.refine_fresh_backbone:
        backbone = new_backbone(pretrained.backbone_name, pretrained.dim, pretrained.layers, pretrained.seed)
    return StoredModel(
        start_layer, backbone, pretrained.backbone_name, pretrained.dim, pretrained.layers, pretrained.seed
    )
