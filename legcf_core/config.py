"""The settings of each stage, with their one set of defaults and their checks.

Torch-free, so the CLI can show defaults without loading the engine. The
defaults that were tuned per layer and backbone (lr, batch, epoch caps) live
in :mod:`legcf_core.tuning`; a ``None`` here means "the tuned value".
Checks raise :class:`~legcf_core.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from legcf_core.errors import ConfigError

INITS = ("metis", "random")
SPLITS = ("valid", "test")
MODEL_CHOICES = ("auto", "pretrain", "refine")  # which trained model a command reads
VALIDATION_METRIC = "ndcg@20"
DEFAULT_KS = (10, 20)
DTYPES = ("float32", "float16", "bfloat16")  # precisions of a compact model file


@dataclass(frozen=True)
class PrepareConfig:
    seed: int = 2024
    test_fraction: float = 0.2  # per-user test share when the dataset is one file


@dataclass(frozen=True)
class PartitionConfig:
    codebook_size: int = 500  # c
    per_entity: int = 2  # t
    anchor_weight: float = 0.5  # w*
    init: str = "metis"
    seed: int = 2024

    def check(self) -> None:
        if self.init not in INITS:
            raise ConfigError("init", f"{self.init!r} is unknown; expected {' or '.join(INITS)}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings shared by pretrain and refine."""

    epochs: int = 100
    batch_size: int = 65536
    negatives: int = 5
    lr: float = 0.05
    l2: float = 3e-4  # lambda
    patience: int = 5  # evaluations without improvement before stopping
    eval_every: int = 1
    lr_decay: float = 0.5  # multiply lr by this after an evaluation without improvement
    seed: int = 2024

    def check(self) -> None:
        for name in ("epochs", "batch_size", "negatives", "patience", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError("lr", f"must be a finite number > 0, got {self.lr}")
        if not math.isfinite(self.l2) or self.l2 < 0:
            raise ConfigError("l2", f"must be a finite number >= 0, got {self.l2}")


@dataclass(frozen=True)
class PretrainConfig:
    dim: int = 128  # d
    layers: int = 3  # L
    train: TrainConfig = field(default_factory=TrainConfig)
    embedding: str = "legcf"  # a name in legcf_core.registry.LAYERS
    backbone: str = "lightgcn"  # a name in legcf_core.registry.BACKBONES
    budget: int | None = None  # stored parameters; None: LEGCF's at this run's c and t

    def check(self) -> None:
        self.train.check()
        if self.dim < 1:
            raise ConfigError("dim", f"must be >= 1, got {self.dim}")
        if self.layers < 0:
            raise ConfigError("layers", f"must be >= 0, got {self.layers}")


@dataclass(frozen=True)
class RefineConfig:
    """Refine keeps a constant learning rate by default: each assignment update
    first costs validation accuracy, and decaying lr on those epochs left the
    codebook unable to recover (docs/design.md)."""

    update_every: int = 1  # m
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr_decay=1.0))

    def check(self) -> None:
        self.train.check()
        if self.update_every < 1:
            raise ConfigError("update_every", f"must be >= 1, got {self.update_every}")


def check_model_choice(which: str) -> None:
    if which not in MODEL_CHOICES:
        raise ConfigError("model", f"{which!r} is unknown; expected {', '.join(MODEL_CHOICES)}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError("split", f"{split!r} is unknown; expected {' or '.join(SPLITS)}")
