"""The rows of a comparison and the paper's named sets of them, torch-free.

An :class:`Experiment` is one row of a comparison: an embedding layer, a
backbone and the symbols that size it, plus which trained model to score
(``pretrain`` gives the paper's no-update ablation from the same run). Rows
that differ only in that share one run directory, trained once. This module
also says what a row trains with (:func:`training_configs`) and where its run
lives (:func:`run_name`), so the CLI can list sets without loading the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from legcf_core.config import PartitionConfig, RefineConfig, TrainConfig
from legcf_core.errors import ConfigError
from legcf_core.registry import BACKBONES, LAYERS, MIXED_BACKBONE, layer_entry
from legcf_core.tuning import tuned


@dataclass(frozen=True)
class Experiment:
    """One configuration of a comparison and the model of it that is scored."""

    name: str
    embedding: str = "legcf"
    backbone: str = "lightgcn"
    dim: int = 128
    layers: int = 3
    codebook_size: int = 500
    per_entity: int = 2
    anchor_weight: float = 0.5
    init: str = "metis"
    update_every: int = 1
    solver: str = RefineConfig.solver  # how assignment updates solve S (config.SOLVERS)
    model: str = "auto"  # "pretrain": score the model before any assignment update
    match_budget: bool = False  # full table: the widest d within LEGCF's budget at c, t, dim
    sweep: str = ""  # the swept symbol, for Figure 4 plots
    value: float = 0.0  # its value in this row

    def key(self) -> str:
        """The run directory name: everything that changes training, nothing else.

        c and t size a layer trained from a partition, a layer sized by a budget
        (LEGCF's at c and t) and a full table matched to that budget; w*, init, m
        and the solver only matter to a layer trained from a partition.
        """
        layer = layer_entry(self.embedding)
        parts = [self.embedding, self.backbone, f"d{self.dim}", f"L{self.layers}"]
        if layer.uses_partition or layer.sized_by_budget or self.match_budget:
            parts += [f"c{self.codebook_size}", f"t{self.per_entity}"]
        if layer.uses_partition:
            parts += [f"w{self.anchor_weight:g}", self.init, f"m{self.update_every}"]
            if self.solver != "pinv":  # runs from before the choice existed used pinv
                parts.append(self.solver)
        return "-".join(parts)


def _sweep(symbol: str, values: list[float], **fixed: Any) -> list[Experiment]:
    field = {"t": "per_entity", "c": "codebook_size", "w*": "anchor_weight", "m": "update_every"}[symbol]
    rows = []
    for value in values:
        settings = {field: int(value) if symbol != "w*" else value, **fixed}
        if symbol == "t" and value == 1:
            settings["anchor_weight"] = 1.0  # one meta-embedding per entity holds all the weight
        rows.append(Experiment(f"{symbol}={value:g}", sweep=symbol, value=float(value), **settings))
    return rows


SETS: dict[str, list[Experiment]] = {
    "table2": [
        Experiment("full d=64", embedding="full", dim=64),
        Experiment("full d=128", embedding="full"),
        *(Experiment(e.label, embedding=e.name) for e in LAYERS.values() if e.sized_by_budget),
        Experiment("LEGCF"),
    ],
    "table3": [
        Experiment("METIS, update"),
        Experiment("METIS, no update", model="pretrain"),
        Experiment("random, update", init="random"),
        Experiment("random, no update", init="random", model="pretrain"),
    ],
    "table4": [  # the paper's UD rows here are full tables of LEGCF's size
        experiment
        for backbone in sorted(BACKBONES, key=lambda name: name == MIXED_BACKBONE)  # the paper's three first
        for experiment in (
            Experiment(f"LEGCF {backbone}", backbone=backbone),
            Experiment(
                f"full {backbone}, same budget", embedding="full", backbone=backbone, match_budget=True
            ),
        )
    ],
    "fig4-t": _sweep("t", [1, 2, 3, 4, 5]),
    "fig4-c": _sweep("c", [100, 500, 1000, 5000, 10000]),
    "fig4-w": _sweep("w*", [0.5, 0.6, 0.7, 0.8, 0.9]),
    "fig4-m": _sweep("m", [1, 2, 3, 5, 10]),
}

TITLES = {
    "table2": "embedding layers at LEGCF's c=500, t=2 budget (paper Table 2)",
    "table3": "METIS or random init, with or without assignment updates (paper Table 3)",
    "table4": "the backbones, LEGCF against a full table of the same size (paper Table 4, and mixed layers)",
    "fig4-t": "meta-embeddings per entity t (paper Figure 4a)",
    "fig4-c": "codebook size c (paper Figure 4d)",
    "fig4-w": "anchor weight w* (paper Figure 4c)",
    "fig4-m": "update interval m (paper Figure 4b)",
}


def check_sets(names: list[str]) -> None:
    unknown = [name for name in names if name not in SETS]
    if unknown:
        raise ConfigError("set", f"{', '.join(unknown)} is unknown; expected some of {', '.join(SETS)}")
    if not names:
        raise ConfigError("set", "must name at least one set")


@dataclass(frozen=True)
class Overrides:
    """Settings that replace the tuned ones for every configuration (smoke runs, tests)."""

    epochs: int | None = None
    batch_size: int | None = None
    dim: int | None = None
    codebook_size: int | None = None
    validation: str | None = None  # the protocol (legcf_core.config.VALIDATIONS); None: test-third


NO_OVERRIDES = Overrides()


def resolve(experiment: Experiment, overrides: Overrides) -> Experiment:
    """The experiment with the overrides applied where it uses the default value
    (a d=64 row stays d=64; the c sweep keeps its c values)."""
    changes: dict[str, int | str] = {}
    if overrides.dim and experiment.dim == Experiment.dim:
        changes["dim"] = overrides.dim
    if overrides.codebook_size and experiment.sweep != "c":
        changes["codebook_size"] = overrides.codebook_size
    return replace(experiment, **changes)


def run_name(experiment: Experiment, seed: int, overrides: Overrides) -> str:
    """A configuration's run directory name; overridden settings get their own directory,
    so a smoke run never replaces a finished real one."""
    name = f"{experiment.key()}-seed{seed}"
    changed = [f"{field}{value}" for field, value in asdict(overrides).items() if value is not None]
    return name if not changed else f"{name}-override-{'-'.join(changed)}"


def partition_config(experiment: Experiment, seed: int) -> PartitionConfig:
    """The row's c, t, w* and init, with the paper's uniform draw of the other t-1
    meta-embeddings, so that the tables and ablations are the paper's."""
    return PartitionConfig(
        experiment.codebook_size,
        experiment.per_entity,
        experiment.anchor_weight,
        experiment.init,
        seed,
        others="random",
    )


def training_configs(
    experiment: Experiment, seed: int, overrides: Overrides
) -> tuple[TrainConfig, TrainConfig]:
    """Pretrain and refine settings: TrainConfig's defaults with the lr, batch and
    epoch caps tuned for the layer (as on the command line), then the overrides."""
    defaults = tuned(experiment.embedding, experiment.backbone)
    base = TrainConfig(seed=seed, batch_size=defaults.batch_size, lr=defaults.lr)
    if overrides.batch_size:
        base = replace(base, batch_size=overrides.batch_size)
    refine_defaults = RefineConfig().train
    pretrain = replace(base, epochs=overrides.epochs or defaults.pretrain_epochs)
    refine = replace(
        base, epochs=overrides.epochs or defaults.refine_epochs, lr_decay=refine_defaults.lr_decay
    )
    return pretrain, refine
