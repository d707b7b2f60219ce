"""Every option of the ``legcf`` commands: its type, choices, help and default, and the
table that names a config field by the flag that sets it.

Torch-free: choices come from the registry and the comparison sets, defaults
from :mod:`legcf_core.config`, so ``legcf --help`` never loads the engine.
"""

from __future__ import annotations

import enum
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from legcf_core.config import (
    DTYPES,
    INITS,
    LR_SCHEDULES,
    MAX_DIM,
    MAX_LAYERS,
    MAX_SEED,
    MODEL_CHOICES,
    OTHERS,
    SOLVERS,
    SPLIT_METHODS,
    SPLITS,
    VALIDATIONS,
)
from legcf_core.experiments.sets import SETS
from legcf_core.registry import AUTO_BACKBONE, BACKBONES, LAYERS


def _choices(name: str, values: tuple[str, ...] | list[str]) -> type[enum.Enum]:
    """A ``str`` enum whose members are ``values``: --help lists them, Click rejects others."""
    return enum.Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


Embedding = _choices("Embedding", list(LAYERS))
Backbone = _choices("Backbone", [AUTO_BACKBONE, *BACKBONES])
Init = _choices("Init", INITS)
Others = _choices("Others", OTHERS)
Split = _choices("Split", SPLITS)
LrSchedule = _choices("LrSchedule", LR_SCHEDULES)
Solver = _choices("Solver", SOLVERS)
SplitMethod = _choices("SplitMethod", SPLIT_METHODS)
Validation = _choices("Validation", VALIDATIONS)
Model = _choices("Model", MODEL_CHOICES)
SetName = _choices("SetName", list(SETS))


def demo_dataset() -> Path:
    """The small Gowalla subsample shipped with the package."""
    return Path(str(resources.files("legcf_core") / "datasets" / "gowalla_mini"))


def parse_ints(text: str) -> tuple[int, ...]:
    """``"10,20"`` as ``(10, 20)``; raises ValueError on anything else."""
    return tuple(int(part) for part in text.split(",") if part.strip())


def _int_list(value: str) -> str:
    try:
        parse_ints(value)
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    return value


# Config field -> the flag that sets it, for engine errors that name fields.
FLAG_NAMES = {
    "data": "--data",
    "seed": "--seed",
    "test_fraction": "--test-fraction",
    "user_col": "--user-col",
    "item_col": "--item-col",
    "rating_col": "--rating-col",
    "time_col": "--time-col",
    "min_rating": "--min-rating",
    "validation": "--validation",
    "valid_fraction": "--valid-fraction",
    "codebook_size": "--codebook-size",
    "per_entity": "--per-entity",
    "anchor_weight": "--anchor-weight",
    "init": "--init",
    "others": "--others",
    "teacher": "--teacher",
    "dim": "--dim",
    "layers": "--layers",
    "embedding": "--embedding",
    "backbone": "--backbone",
    "budget": "--budget",
    "compression": "--compression",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "negatives": "--negatives",
    "lr": "--lr",
    "l2": "--l2",
    "patience": "--patience",
    "eval_every": "--eval-every",
    "eval_users": "--eval-users",
    "lr_decay": "--lr-decay",
    "lr_schedule": "--lr-schedule",
    "update_every": "--update-every",
    "solver": "--solver",
    "split": "--split",
    "k": "--k",
    "ks": "--k",
    "model": "--model",
    "which": "--model",
    "device": "--device",
    "output": "--output",
    "set": "--set",
    "seeds": "--seeds",
    "users": "--users",
    "items": "--items",
    "interactions": "--interactions",
    "communities": "--communities",
    "in_community": "--in-community",
    "user_exponent": "--user-exponent",
    "item_exponent": "--item-exponent",
    "min_per_user": "--min-per-user",
    "force": "--force",
}
# Where a command sets a field by another flag than FLAG_NAMES says.
COMMAND_FLAG_NAMES = {
    "run": {
        "epochs": "--pretrain-epochs or --refine-epochs",
        "lr_decay": "--lr-decay or --refine-lr-decay",
    },
}


def flag_names(command: str | None) -> dict[str, str]:
    """The field -> flag table of one command."""
    return {**FLAG_NAMES, **COMMAND_FLAG_NAMES.get(command or "", {})}


# ----------------------------------------------------------------- data

RunDirArg = Annotated[Path, typer.Argument(help="Run directory holding the stages' artifacts.")]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Dataset: a directory with train and test files, or one file (.txt LightGCN text, .csv, .tsv, "
        ".dat MovieLens ratings, .inter RecBole, .parquet). Default: the shipped demo.",
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, max=MAX_SEED, help="Seed for splits, sampling and initialization.")
]
TestFractionOpt = Annotated[
    float,
    typer.Option(
        "--test-fraction", min=0.0, max=1.0, help="Per-user test share when --data is a single file."
    ),
]


def _column(role: str) -> typer.models.OptionInfo:
    return typer.Option(
        f"--{role}-col",
        help=f"The {role} column: a 0-based index or a header name. Default: found by its header name"
        + (f", else column {('user', 'item').index(role)}." if role in ("user", "item") else ", else none."),
    )


UserColOpt = Annotated[str | None, _column("user")]
ItemColOpt = Annotated[str | None, _column("item")]
RatingColOpt = Annotated[str | None, _column("rating")]
TimeColOpt = Annotated[str | None, _column("time")]
MinRatingOpt = Annotated[
    float | None,
    typer.Option(
        "--min-rating", help="Keep only interactions rated at least this (explicit to implicit feedback)."
    ),
]
HoldoutOpt = Annotated[
    SplitMethod,
    typer.Option(
        "--split",
        help="How test is held out: auto (a directory's own train/test files, else random), random "
        "(floor(--test-fraction x n) of each user's interactions), time (each user's latest; needs a "
        "time column: --time-col, a header named time or timestamp, or a CSV's third column) or files.",
    ),
]
ValidationOpt = Annotated[
    Validation,
    typer.Option(
        "--validation",
        help="Where validation (early stopping, refine's choice) comes from: test-third (the LEGCF "
        "paper's: ceil(1/3) of each user's test items, still ranked as misses in test), train-fraction "
        "(--valid-fraction of each user's training; the whole test set is scored, as in LightGCN) or "
        "none (fixed epochs, the last model is kept).",
    ),
]
ValidFractionOpt = Annotated[
    float | None,
    typer.Option(
        "--valid-fraction",
        min=0.0,
        max=1.0,
        help="Per-user share of training carved out for --validation train-fraction (default 0.1).",
    ),
]

# ------------------------------------------------------------ partition

CodebookOpt = Annotated[
    int | None,
    typer.Option(
        "--codebook-size",
        "-c",
        min=1,
        help="c: number of meta-embeddings. Default: sized to the data by --compression (or --budget).",
    ),
]
CompressionOpt = Annotated[
    float | None,
    typer.Option(
        "--compression",
        min=1.0,
        help="Without -c: c is the largest round number (two significant digits) at which LEGCF stores "
        "at least this many times fewer parameters than the full table, N*d / (c*d + N*t). "
        "Default 44, the paper's Gowalla ratio (c = 500 there).",
    ),
]
SizingBudgetOpt = Annotated[
    int | None,
    typer.Option(
        "--budget",
        min=1,
        help="Without -c: c is the largest at which LEGCF stores at most this many parameters (c*d + N*t).",
    ),
]
SizingDimOpt = Annotated[
    int | None,
    typer.Option(
        "--dim",
        "-d",
        min=1,
        max=MAX_DIM,
        help="d that c is sized at; pretrain trains at it unless given another. Default: 64; 128 "
        "with -c, and with --init metis or random where METIS at the 128-d c cuts 0.8 or more of "
        "what a random partition would (no communities); the teacher's width with --teacher.",
    ),
]
PerEntityOpt = Annotated[
    int, typer.Option("--per-entity", "-t", min=1, help="t: meta-embeddings per entity.")
]
AnchorOpt = Annotated[
    float, typer.Option("--anchor-weight", min=0.0, max=1.0, help="w*: initial weight of the anchor.")
]
InitOpt = Annotated[
    Init,
    typer.Option(
        "--init",
        help="Initial S: METIS or random anchors, or S and the codebook coded from the graph's leading "
        "singular vectors (spectral) or from --teacher's table; auto is METIS on a graph of "
        "communities, else spectral.",
    ),
]
OthersOpt = Annotated[
    Others,
    typer.Option(
        "--others",
        help="How S0 picks each entity's t-1 meta-embeddings beside its anchor: the other parts its "
        "edges reach most (neighbor), or uniformly at random (random, the paper). METIS and random "
        "anchors only; a spectral or teacher start codes S0 itself.",
    ),
]
TeacherOpt = Annotated[
    Path | None,
    typer.Option(
        "--teacher",
        help="A run trained on the same data (a full table, say): LEGCF starts from its table, coded "
        "as S and a codebook. Implies --init teacher.",
    ),
]

# ---------------------------------------------------------------- model

DimOpt = Annotated[
    int | None,
    typer.Option(
        "--dim",
        "-d",
        min=1,
        max=MAX_DIM,
        help="d: embedding dimension. Default: 128 for other layers; LEGCF trains at the d partition "
        "chose (64 unless -c, or METIS or random anchors on a graph without communities, made it "
        "128). LEGCF below 128 is sized against the 128-d table, so d = 64 holds twice the "
        "meta-embeddings in the same budget.",
    ),
]
LayersOpt = Annotated[int, typer.Option("--layers", "-L", min=0, max=MAX_LAYERS, help="L: GNN layers.")]
EmbeddingOpt = Annotated[
    Embedding,
    typer.Option(
        "--embedding",
        help="Embedding layer: " + "; ".join(f"{e.name}: {e.summary}" for e in LAYERS.values()) + ".",
    ),
]
BackboneOpt = Annotated[
    Backbone,
    typer.Option(
        "--backbone",
        help="GNN: auto: lightgcn-mix for LEGCF (lightgcn under --shard), lightgcn for other layers; "
        + "; ".join(f"{e.name}: {e.summary}" for e in BACKBONES.values())
        + ".",
    ),
]
BudgetOpt = Annotated[
    int | None,
    typer.Option(
        "--budget",
        min=1,
        help="Parameters a layer sized by budget ("
        + ", ".join(e.name for e in LAYERS.values() if e.sized_by_budget)
        + ") may store; a full table takes the widest d that fits. Default: what LEGCF stores at c and t. "
        "For LEGCF without -c: c is the largest that fits in it.",
    ),
]
UpdateOpt = Annotated[
    int, typer.Option("--update-every", "-m", min=1, help="m: epochs between assignment updates.")
]
SolverOpt = Annotated[
    Solver,
    typer.Option(
        "--solver",
        help="How an assignment update solves S: pinv (the paper's top-t of H_full pinv(H_meta), "
        "rows summing to 1), pursuit (t meta-embeddings a row by matching pursuit, least-squares "
        "weights) or pooled (the same pursuit, with the N*t weights shared: 1 to 2t a row, where "
        "they cut the fitting error most).",
    ),
]

# ------------------------------------------------------------- training

EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Maximum number of epochs.")]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Training positives per batch (16,384 on LightGCN for legcf and full, tuned; 65,536 otherwise).",
    ),
]
NegOpt = Annotated[int, typer.Option("--negatives", min=1, help="Sampled negatives per positive.")]
LrOpt = Annotated[
    float | None,
    typer.Option(
        "--lr",
        min=0.0,
        help="Adam learning rate, matched to --batch-size (LEGCF on LightGCN 0.1, "
        "other layers on LightGCN 0.05, NGCF and LR-GCCF 0.005).",
    ),
]
L2Opt = Annotated[float, typer.Option("--l2", min=0.0, help="lambda: L2 penalty on layer-0 embeddings.")]
PatienceOpt = Annotated[
    int, typer.Option("--patience", min=1, help="Stop after this many evaluations without improvement.")
]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", min=1, help="Epochs between validation runs.")]
EvalUsersOpt = Annotated[
    int | None,
    typer.Option(
        "--eval-users",
        min=1,
        help="Score a sample of this many users (drawn with --seed, the same each time) instead of all: "
        "ranking every item for every user is slow on large graphs. Default: all users.",
    ),
]
LrDecayOpt = Annotated[
    float,
    typer.Option(
        "--lr-decay",
        min=0.0,
        max=1.0,
        help="Multiply the learning rate by this after a validation without gain.",
    ),
]
LrScheduleOpt = Annotated[
    LrSchedule,
    typer.Option(
        "--lr-schedule",
        help="plateau: --lr-decay after a validation without gain (constant without validation); "
        "cosine: from --lr down to 0 over the epochs, fixed in advance (for --validation none).",
    ),
]
PretrainEpochsOpt = Annotated[int, typer.Option("--pretrain-epochs", min=1, help="Maximum pretrain epochs.")]
RefineEpochsOpt = Annotated[int, typer.Option("--refine-epochs", min=1, help="Maximum refine epochs.")]
RefineLrDecayOpt = Annotated[
    float,
    typer.Option(
        "--refine-lr-decay", min=0.0, max=1.0, help="--lr-decay for the refine stage (default: constant lr)."
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]

# --------------------------------------------------------------- output

SplitOpt = Annotated[Split, typer.Option("--split", help="Which held-out interactions to score.")]
KsOpt = Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.", callback=_int_list)]
ModelOpt = Annotated[
    Model, typer.Option("--model", help="Which trained model: auto (refine if present), pretrain or refine.")
]
PlotDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="DIR",
        help="Write PNGs into DIR: training curves, and for LEGCF entities per meta-embedding, "
        "the weights in S and a 2-D projection of the embeddings. Needs a run directory.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
ShardOpt = Annotated[
    bool,
    typer.Option(
        "--shard",
        help="Sharded training (LEGCF on LightGCN, CPU): each torchrun rank holds only its rows of the "
        "graph, S and P (docs/scaling.md).",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Model file (default RUN_DIR/model.safetensors, or model.compact.safetensors)."
    ),
]
Dtype = _choices("Dtype", DTYPES)
CompactOpt = Annotated[
    bool,
    typer.Option(
        "--compact", help="The serving form: c propagated meta-embeddings and t weights an entity (LEGCF)."
    ),
]
CodesOpt = Annotated[
    int | None,
    typer.Option(
        "--codes", min=1, help="Meta-embeddings an entity in a compact file (default: the model's t)."
    ),
]
PerUserOpt = Annotated[
    Path | None,
    typer.Option(
        "--per-user",
        dir_okay=False,
        help="Also write each scored user's metrics to this CSV, in the dataset's own user ids.",
    ),
]
FitRoundsOpt = Annotated[
    int,
    typer.Option(
        "--fit-rounds",
        min=0,
        help="Rounds of refitting a compact file's meta-embeddings to its codes (0: the model's own).",
    ),
]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="Precision of a compact file's real numbers.")]
SeenOpt = Annotated[
    bool,
    typer.Option(
        "--seen/--no-seen",
        help="Keep the training interactions in a compact file, so recommendations leave them out.",
    ),
]
ModelFileArg = Annotated[
    Path, typer.Argument(help="An exported model file (exact or compact) or a run directory.")
]
UserOpt = Annotated[list[str] | None, typer.Option("--user", help="A user id of the dataset; repeatable.")]
UsersFileOpt = Annotated[Path | None, typer.Option("--users", help="A file of user ids, one a line.")]
ItemsOpt = Annotated[
    str | None,
    typer.Option(
        "--items",
        help="Items a new user had, comma-separated ids: recommend for them (fold-in).",
    ),
]
TopKOpt = Annotated[int, typer.Option("--k", help="Items to recommend.", min=1)]
HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")]
PortOpt = Annotated[int, typer.Option("--port", help="TCP port to listen on.", min=1, max=65535)]

# -------------------------------------------------------------- compare

OutDirArg = Annotated[Path, typer.Argument(help="Output directory: runs/, <set>.md, .json and .png.")]
SetsOpt = Annotated[
    list[SetName],
    typer.Option("--set", metavar="NAME", help=f"Named configuration set, repeatable: {', '.join(SETS)}."),
]
SeedsOpt = Annotated[
    str,
    typer.Option("--seeds", help="Seeds, comma-separated; results are averaged.", callback=_int_list),
]
