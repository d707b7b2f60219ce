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

INITS = ("auto", "metis", "random", "spectral", "teacher")
OTHERS = ("neighbor", "random")  # how S0 picks the t-1 meta-embeddings beside the anchor
SPLITS = ("valid", "test")
# How prepare holds out test: "auto" is "files" for a directory of train/test files and
# "random" for one file; "time" takes each user's latest interactions (needs a time column).
SPLIT_METHODS = ("auto", "random", "time", "files")
# Where validation comes from: the LEGCF paper's third of each user's test items (left in the
# test ranking as misses), a per-user share of training (the whole test set is scored), or none.
VALIDATIONS = ("test-third", "train-fraction", "none")
DEFAULT_VALID_FRACTION = 0.1
# How the learning rate moves: "plateau" multiplies it by lr_decay after a validation without
# gain (constant without validation); "cosine" follows a half cosine from lr to 0 over the
# epochs, fixed in advance, so it suits --validation none.
LR_SCHEDULES = ("plateau", "cosine")
# Without -c, c is sized to the data: full table over LEGCF at least this (the paper's Gowalla
# ratio, 9,067,392 / 205,678 = 44.09); see legcf_core.sizing.
DEFAULT_COMPRESSION = 44.0
# d of a full table, and of LEGCF where partition does not choose it. A narrower LEGCF is sized
# against the 128-d table it replaces (legcf_core.sizing), so d = 64 buys twice the
# meta-embeddings in the same budget: better on graphs of communities (Gowalla) and from a
# spectral start, slightly worse from METIS anchors on ml-1m (docs/results.md); without --dim,
# partition chooses d with the start (stages.partition.resolve_start).
DEFAULT_DIM = 128
# How an assignment update solves S: the paper's pinv closed form, matching pursuit with t
# codes a row, or pursuit with the N*t codes pooled over the rows (legcf_core.assignment).
SOLVERS = ("pinv", "pursuit", "pooled")
MODEL_CHOICES = ("auto", "pretrain", "refine")  # which trained model a command reads
VALIDATION_METRIC = "ndcg@20"
DEFAULT_KS = (10, 20)
DTYPES = ("float32", "float16", "bfloat16")  # precisions of a compact model file
MAX_SEED = 2**32 - 1  # numpy, torch and pymetis all accept 0..2^32-1
MAX_DIM = 4096  # d: bounds what a model file may ask to allocate (the paper uses 64 to 256)
MAX_LAYERS = 32  # L: bounds the propagation passes a model file may ask for (the paper uses 1 to 4)


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    return value


def check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    """``value`` is an integer (not a bool) in low..high."""
    if _integer(name, value) < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(name, f"must be {bounds}, got {value}")


def check_seed(seed: object, name: str = "seed") -> None:
    check_int(name, seed, 0, MAX_SEED)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PrepareConfig:
    """How prepare splits a dataset: the seed of the holdout and validation draws, the
    per-user test share when the dataset is one file, how test is held out and where
    validation comes from (``valid_fraction`` None: the default share, for train-fraction)."""

    seed: int = 2024
    test_fraction: float = 0.2
    split: str = "auto"
    validation: str = "test-third"
    valid_fraction: float | None = None

    def check(self) -> None:
        check_seed(self.seed)
        if not 0.0 < _finite("test_fraction", self.test_fraction) < 1.0:
            raise ConfigError("test_fraction", f"must lie in (0, 1), got {self.test_fraction}")
        if self.split not in SPLIT_METHODS:
            raise ConfigError("split", f"{self.split!r} is unknown; expected {', '.join(SPLIT_METHODS)}")
        if self.validation not in VALIDATIONS:
            raise ConfigError(
                "validation", f"{self.validation!r} is unknown; expected {', '.join(VALIDATIONS)}"
            )
        if self.valid_fraction is not None:
            if self.validation != "train-fraction":
                raise ConfigError("valid_fraction", "applies to --validation train-fraction only")
            if not 0.0 < _finite("valid_fraction", self.valid_fraction) < 1.0:
                raise ConfigError("valid_fraction", f"must lie in (0, 1), got {self.valid_fraction}")

    @property
    def fraction_of_train(self) -> float | None:
        """The share of each user's training carved out for validation (train-fraction only)."""
        if self.validation != "train-fraction":
            return None
        return DEFAULT_VALID_FRACTION if self.valid_fraction is None else self.valid_fraction


def column_choice(text: str | None) -> str | int | None:
    """A ``--*-col`` value: ASCII digits are a 0-based index, other text a header name."""
    if text is None or text == "":
        return None
    return int(text) if text.isascii() and text.isdigit() else text


@dataclass(frozen=True)
class ReadConfig:
    """How prepare reads the data: which column is what (a 0-based index or a header name; None
    for the format's default), and the least rating an interaction needs to be kept."""

    user_col: str | int | None = None
    item_col: str | int | None = None
    rating_col: str | int | None = None
    time_col: str | int | None = None
    min_rating: float | None = None

    def check(self) -> None:
        for name in ("user_col", "item_col", "rating_col", "time_col"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
                raise ConfigError(name, f"must be a column name or index, got {value!r}")
            if isinstance(value, int) and value < 0:
                raise ConfigError(name, f"must be a 0-based index >= 0, got {value}")
        if self.min_rating is not None:
            _finite("min_rating", self.min_rating)

    def recorded(self) -> dict[str, str | int | float]:
        """The settings that differ from the defaults, as prepare's manifest entry records them."""
        fields = ("user_col", "item_col", "rating_col", "time_col", "min_rating")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


@dataclass(frozen=True)
class PartitionConfig:
    """c, t, w*, the init, how S0 picks the others beside the anchor, and the seed. Without
    ``codebook_size``, partition sizes c to the data (legcf_core.sizing): from ``budget`` if
    given, else from ``compression`` (default 44), at embedding dimension ``dim`` (pretrain's d)."""

    codebook_size: int | None = None  # c; None: sized to the data
    per_entity: int = 2  # t
    anchor_weight: float = 0.5  # w*
    init: str = "auto"  # METIS or spectral, chosen from the graph (sizing.choose_init)
    seed: int = 2024
    compression: float | None = None  # target full/LEGCF parameter ratio; None: DEFAULT_COMPRESSION
    budget: int | None = None  # LEGCF's parameters c*d + N*t at most this
    dim: int | None = None  # the d that c is sized at; None: chosen from the data (sizing.choose_width)
    teacher: str | None = None  # init "teacher": the trained run whose table S0 and M0 are coded from
    others: str = "neighbor"  # S0's t-1 others: parts the entity's edges reach, or "random" (the paper)

    def check(self) -> None:
        """What needs no data: c, t >= 1, t <= c, w* in range, a known init and others (a teacher with
        init "teacher" only), the seed's range, one sizing target at most."""
        if self.init not in INITS:
            raise ConfigError("init", f"{self.init!r} is unknown; expected {', '.join(INITS)}")
        if self.others not in OTHERS:
            raise ConfigError("others", f"{self.others!r} is unknown; expected {', '.join(OTHERS)}")
        if (self.init == "teacher") != (self.teacher is not None):
            if self.teacher is None:
                raise ConfigError("init", "teacher needs --teacher RUN, a run trained on the same data")
            raise ConfigError("init", f"is {self.init}; --teacher needs --init teacher")
        for name, symbol in (("codebook_size", "c"), ("per_entity", "t")):
            value = getattr(self, name)
            if value is not None and _integer(name, value) < 1:
                raise ConfigError(name, f"{symbol} must be >= 1, got {value}")
        if self.codebook_size is not None and self.per_entity > self.codebook_size:
            raise ConfigError(
                "per_entity", f"t={self.per_entity} exceeds codebook size c={self.codebook_size}"
            )
        weight = _finite("anchor_weight", self.anchor_weight)
        if not 0.0 < weight <= 1.0 or (self.per_entity > 1 and weight >= 1.0):
            upper = "1)" if self.per_entity > 1 else "1]"
            raise ConfigError(
                "anchor_weight", f"w* must lie in (0, {upper} with t={self.per_entity}, got {weight}"
            )
        check_seed(self.seed)
        self.check_sizing()

    def check_sizing(self) -> None:
        if self.compression is not None and _finite("compression", self.compression) <= 1.0:
            raise ConfigError(
                "compression", f"must be > 1 (times smaller than the full table), got {self.compression}"
            )
        if self.budget is not None:
            check_int("budget", self.budget, 1)
        if self.dim is not None:
            check_int("dim", self.dim, 1, MAX_DIM)
        if self.compression is not None and self.budget is not None and self.codebook_size is None:
            raise ConfigError("compression", "and --budget both size c; give one of them (or -c)")


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
    lr_schedule: str = "plateau"  # a name in LR_SCHEDULES
    eval_users: int | None = None  # validate on a seeded sample of this many users; None: all

    def check(self) -> None:
        for name in ("epochs", "batch_size", "negatives", "patience", "eval_every"):
            check_int(name, getattr(self, name), 1)
        if self.eval_users is not None:
            check_int("eval_users", self.eval_users, 1)
        if _finite("lr", self.lr) <= 0:
            raise ConfigError("lr", f"must be a finite number > 0, got {self.lr}")
        if _finite("l2", self.l2) < 0:
            raise ConfigError("l2", f"must be a finite number >= 0, got {self.l2}")
        if not 0.0 < _finite("lr_decay", self.lr_decay) <= 1.0:
            raise ConfigError("lr_decay", f"must lie in (0, 1] (1 keeps lr constant), got {self.lr_decay}")
        check_seed(self.seed)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                "lr_schedule", f"{self.lr_schedule!r} is unknown; expected {' or '.join(LR_SCHEDULES)}"
            )


@dataclass(frozen=True)
class PretrainConfig:
    dim: int | None = None  # d; None: a layer trained from a partition takes its d, others DEFAULT_DIM
    layers: int = 3  # L
    train: TrainConfig = field(default_factory=TrainConfig)
    embedding: str = "legcf"  # a name in legcf_core.registry.LAYERS
    backbone: str = "auto"  # a name in legcf_core.registry.BACKBONES, or auto: the embedding's default
    budget: int | None = None  # stored parameters; None: LEGCF's at this run's c and t

    def check(self) -> None:
        self.train.check()
        if self.dim is not None:
            check_int("dim", self.dim, 1, MAX_DIM)
        check_int("layers", self.layers, 0, MAX_LAYERS)
        if self.budget is not None:
            check_int("budget", self.budget, 1)


@dataclass(frozen=True)
class RefineConfig:
    """Refine keeps a constant learning rate by default: each assignment update
    first costs validation accuracy, and decaying lr on those epochs left the
    codebook unable to recover (docs/design.md)."""

    update_every: int = 1  # m
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr_decay=1.0))
    solver: str = "pooled"  # a name in SOLVERS; "pinv" is the paper's (docs/design.md)

    def check(self) -> None:
        self.train.check()
        check_int("update_every", self.update_every, 1)
        if self.solver not in SOLVERS:
            raise ConfigError("solver", f"{self.solver!r} is unknown; expected {', '.join(SOLVERS)}")


def check_model_choice(which: str) -> None:
    if which not in MODEL_CHOICES:
        raise ConfigError("model", f"{which!r} is unknown; expected {', '.join(MODEL_CHOICES)}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError("split", f"{split!r} is unknown; expected {' or '.join(SPLITS)}")
