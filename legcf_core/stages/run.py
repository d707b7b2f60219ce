"""Run: every stage that applies to the chosen layer, in order, with one configuration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from legcf_core import artifacts as art
from legcf_core.config import (
    DEFAULT_DIM,
    PartitionConfig,
    PrepareConfig,
    PretrainConfig,
    ReadConfig,
    RefineConfig,
)
from legcf_core.partition import check_sizes
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.registry import layer_type
from legcf_core.sizing import choose_codebook
from legcf_core.stages.evaluate import evaluate_run
from legcf_core.stages.export import export
from legcf_core.stages.partition import partition
from legcf_core.stages.prepare import prepare_as
from legcf_core.stages.pretrain import pretrain
from legcf_core.stages.refine import refine
from legcf_core.stages.session import concrete_backbone, refuse_unshardable


def run_all(
    run: art.RunDir,
    data_path: Path,
    partition_config: PartitionConfig,
    pretrain_config: PretrainConfig,
    refine_config: RefineConfig,
    device: torch.device,
    test_fraction: float = 0.2,
    reporter: Reporter | None = None,
    match_budget: bool = False,
    protocol: PrepareConfig | None = None,
    read: ReadConfig | None = None,
) -> dict[str, Any]:
    """prepare, then partition if the layer uses one, pretrain, refine if it has one,
    test metrics and an export.

    A layer sized by budget without ``budget`` gets LEGCF's at the partition
    config's c and t, and so does a full table with ``match_budget`` (its d is
    then solved for). ``protocol`` chooses the split and validation (its seed and
    test fraction are the partition seed and ``test_fraction``), ``read`` the columns and
    the least rating.
    """
    reporter = reporter or SilentReporter()
    protocol = replace(protocol or PrepareConfig(), seed=partition_config.seed, test_fraction=test_fraction)
    kind = layer_type(pretrain_config.embedding)
    pretrain_config = concrete_backbone(pretrain_config)
    if pretrain_config.dim is not None:  # c is sized at pretrain's d; without one, partition chooses
        partition_config = replace(partition_config, dim=pretrain_config.dim)
    read = read or ReadConfig()
    for config in (protocol, read, partition_config, pretrain_config):
        config.check()  # every setting, before any file is written
    if kind.refines:
        refine_config.check()
    refuse_unshardable(kind, pretrain_config.backbone)
    with run.writing("run", create=True):  # one lock over every stage
        prepared = prepare_as(run, data_path, protocol, reporter, read)
        if kind.uses_partition:
            partition(run, partition_config, reporter)
        elif pretrain_config.budget is None and (kind.sized_by_budget or match_budget):
            pretrain_config = replace(
                pretrain_config, budget=legcf_budget(prepared, partition_config, reporter)
            )
        pretrain(run, pretrain_config, device, reporter)
        kept = "pretrain"
        if kind.refines:
            kept = refine(run, refine_config, device, reporter)["kept"]
        train = pretrain_config.train  # --eval-users samples the test users as it does validation's
        result = evaluate_run(
            run, "test", (10, 20), "auto", device, reporter, None, train.eval_users, train.seed
        )
        exported = export(run)
        sizes = {name: exported[name] for name in ("params", "backbone_params", "embedding_bytes")}
        return {
            **result,
            "embedding": pretrain_config.embedding,
            "backbone": pretrain_config.backbone,
            "kept": kept,
            **sizes,
            "model_file_bytes": exported["bytes"],
        }


def legcf_budget(prepared: dict[str, Any], config: PartitionConfig, reporter: Reporter) -> int:
    """What LEGCF stores at the partition config's c (given or sized to the data) and t: the
    budget of a layer sized by budget when none is given."""
    entities = prepared["users"] + prepared["items"]
    dim = DEFAULT_DIM if config.dim is None else config.dim
    choice = choose_codebook(entities, dim, config.per_entity, config.codebook_size, config.compression)
    check_sizes(entities, choice.size, config.per_entity)
    if choice.rule != "given":
        reporter.note(f"budget of LEGCF at {choice.reason()}")
    return choice.params
