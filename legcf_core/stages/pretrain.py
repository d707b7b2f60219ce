"""Pretrain: train a fresh embedding layer (LEGCF: the codebook with S0 fixed) and keep
the best on validation NDCG@20."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import torch

from legcf_core import artifacts as art
from legcf_core.config import (
    DEFAULT_DIM,
    MAX_DIM,
    VALIDATION_METRIC,
    PretrainConfig,
)
from legcf_core.data import Interactions
from legcf_core.errors import ConfigError
from legcf_core.layers import LayerSize
from legcf_core.model import StoredModel, new_backbone
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.registry import layer_type
from legcf_core.sizing import choose_codebook, legcf_params
from legcf_core.stages.inputs import load_data, load_initial_assignment, load_initial_codebook
from legcf_core.stages.record import record_stage, rounded
from legcf_core.stages.session import Session, concrete_backbone, history_rows, refuse_unshardable


def pretrain(
    run: art.RunDir, config: PretrainConfig, device: torch.device, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Train the layer ``config.embedding`` names on ``config.backbone``; write the pretrain file."""
    reporter = reporter or SilentReporter()
    config.check()
    kind = layer_type(config.embedding)
    config = concrete_backbone(config)
    refuse_unshardable(kind, config.backbone)  # an unknown backbone, or one --shard cannot train, fails first
    config = with_dim(run, config, kind.uses_partition)
    with run.writing("pretrain"):
        data = load_data(run)
        size, config, inputs = layer_size(run, config, kind, data, reporter)
        started = time.perf_counter()
        model = StoredModel(
            kind.create(size),
            new_backbone(config.backbone, config.dim, config.layers, config.train.seed),
            config.backbone,
            config.dim,
            config.layers,
            config.train.seed,
        )
        if size.budget is not None:
            sizing = {k: v for k, v in model.layer.header().items() if k != "budget"}
            chosen = "" if not sizing else ": " + ", ".join(f"{k} {v}" for k, v in sizing.items())
            reporter.note(
                f"{config.embedding} budget {size.budget:,} parameters ({budget_source(run, config)}){chosen}"
            )
        trained = model.layer.pretrain(Session(model, data, config.train, device, reporter, "pretrain", run))
        model.layer = trained.layer
        digest = run.load_manifest()["dataset"]["fingerprint"]
        meta = art.header(model.layer.stored_kind, dataset=digest, **model.header())
        out = art.write_tensors(run.file(art.PRETRAIN_FILE), model.arrays(), meta)
        if data.validation == "none":
            reporter.note(
                "no validation split (--validation none): pretrain ran every epoch and kept its last "
                f"model (epoch {trained.best_epoch})"
            )
        metrics = {
            "best_epoch": trained.best_epoch,
            VALIDATION_METRIC: None,  # stays None without a validation split
            **rounded(trained.valid),
            "params": model.stored_params(),
        }
        recorded = recorded_config(config, size, device, data.validation)
        record_stage(
            run,
            "pretrain",
            config=recorded,
            inputs=inputs,
            outputs={art.PRETRAIN_FILE: out},
            metrics=metrics,
            started=started,
            history=history_rows(trained.history),
            **trained.manifest,
        )
        return metrics


def recorded_config(config: PretrainConfig, size: LayerSize, device: torch.device, validation: str) -> dict:
    """Pretrain's manifest config: the layer, the training settings and the data's validation."""
    return {
        "dim": config.dim,
        "layers": config.layers,
        "embedding": config.embedding,
        "backbone": config.backbone,
        "budget": size.budget if size.budget is not None else config.budget,
        **asdict(config.train),
        "device": str(device),
        "validation": validation,
    }


def layer_size(
    run: art.RunDir, config: PretrainConfig, kind: Any, data: Interactions, reporter: Reporter
) -> tuple[LayerSize, PretrainConfig, tuple[str, ...]]:
    """What the fresh layer is built from, the config with any width a budget sets, and the files read."""
    seed, n = config.train.seed, data.n_entities
    if kind.uses_partition:
        assignment, part_config = load_initial_assignment(run, n)
        assert config.dim is not None
        start = load_initial_codebook(run, assignment.shape[1], config.dim)
        if start is not None:
            teacher = part_config.get("teacher")
            source = f"teacher {teacher}" if teacher else "the graph's spectral rows"
            reporter.note(f"the codebook starts from the one partition coded from {source}")
        size = LayerSize(
            n, config.dim, seed, assignment=assignment, per_entity=part_config["per_entity"], codebook=start
        )
        return size, config, (art.DATA_FILE, art.PARTITION_FILE)
    if kind.sized_by_budget:
        return LayerSize(n, config.dim, seed, budget=resolve_budget(run, config, n)), config, (art.DATA_FILE,)
    if config.budget is not None and (dim := kind.dim_within(config.budget, n)) is not None:
        config = replace(config, dim=dim)
        reporter.note(f"{config.embedding} table in {config.budget:,} parameters: d = {dim}")
    return LayerSize(n, config.dim, seed), config, (art.DATA_FILE,)


def with_dim(run: art.RunDir, config: PretrainConfig, uses_partition: bool) -> PretrainConfig:
    """``config`` with d resolved where none was given: a layer trained from a partition takes
    the d that partition sized c at (so c*d is the budget it chose), any other the default."""
    if config.dim is not None:
        return config
    dim = DEFAULT_DIM
    if uses_partition and (entry := _partition_entry(run)):
        dim = entry.get("dim", DEFAULT_DIM)  # recorded since d was an option; 128 before
    return replace(config, dim=dim)


def _partition_entry(run: art.RunDir) -> dict[str, Any]:
    """The partition stage's config from the manifest ({} without one); its d checked, as the
    manifest of a run from before d was recorded, or a hostile one, may lack or mangle it."""
    entry = run.load_manifest().get("stages", {}).get("partition")
    config = dict(entry["config"]) if entry is not None else {}
    dim = config.get("dim")
    if dim is not None and (type(dim) is not int or not 1 <= dim <= MAX_DIM):
        raise ConfigError("dim", f"the partition stage records d = {dim!r}; rerun partition")
    return config


def legcf_sizes(run: art.RunDir, n_entities: int) -> tuple[int, int, int]:
    """This run's partition c, t and d, or without a partition LEGCF's default sizing."""
    entry = _partition_entry(run)
    if entry:
        return entry["codebook_size"], entry["per_entity"], entry.get("dim", DEFAULT_DIM)
    return choose_codebook(n_entities, DEFAULT_DIM, 2).size, 2, DEFAULT_DIM


def budget_source(run: art.RunDir, config: PretrainConfig) -> str:
    if config.budget is not None:
        return "as given"
    entities = run.load_manifest()["dataset"]
    c, t, dim = legcf_sizes(run, int(entities.get("users", 0)) + int(entities.get("items", 0)))
    return f"LEGCF c={c}, t={t}, d={dim}"


def resolve_budget(run: art.RunDir, config: PretrainConfig, n_entities: int) -> int:
    """The parameter budget of a layer sized by budget: ``config.budget`` if given;
    else what LEGCF stores at this run's partition c and t (c*d + N*t); else at c
    sized to the data (legcf_core.sizing) and t = 2."""
    if config.budget is not None:
        budget = config.budget
    else:
        c, t, dim = legcf_sizes(run, n_entities)
        budget = legcf_params(n_entities, dim, c, t)
    check_budget(budget, n_entities, config.dim)
    return budget


def check_budget(budget: int, n_entities: int, dim: int) -> None:
    if budget < 1:
        raise ConfigError("budget", f"must be >= 1 parameter, got {budget}")
    if budget > n_entities * dim:
        raise ConfigError(
            "budget",
            f"{budget} exceeds the full table ({n_entities} x {dim} = {n_entities * dim}); use a full table",
        )
