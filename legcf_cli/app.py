"""The ``legcf`` command line: one thin command per stage.

Commands declare options, resolve them into engine configs, show progress,
and turn the engine's :class:`LegcfError` into one line on stderr and exit 1.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from legcf_cli.compare_report import write_report
from legcf_cli.reporting import RichReporter, err_console
from legcf_core import stages
from legcf_core.artifacts import RunDir
from legcf_core.config import RefineConfig, TrainConfig
from legcf_core.errors import LegcfError
from legcf_core.experiments import runner, sets
from legcf_core.runtime import keep_freed_memory, resolve_device
from legcf_core.tuning import tuned

app = typer.Typer(
    name="legcf",
    help="Lightweight embeddings for graph collaborative filtering (LEGCF, SIGIR'24), stage by stage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out_console = Console()

F = TypeVar("F", bound=Callable[..., Any])


def demo_dataset() -> Path:
    """The small Gowalla subsample shipped with the package."""
    return Path(str(resources.files("legcf_core") / "datasets" / "gowalla_mini"))


def user_errors(command: F) -> F:
    """Print a LegcfError as one line on stderr and exit 1; Ctrl-C exits 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        keep_freed_memory()
        try:
            return command(*args, **kwargs)
        except LegcfError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]: files already written are intact")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# ------------------------------------------------------------------ options

RunDirArg = Annotated[Path, typer.Argument(help="Run directory holding the stages' artifacts.")]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Dataset: a directory with train/test files, or one CSV/TSV. Default: the shipped demo.",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for splits, sampling and initialization.")]
TestFractionOpt = Annotated[
    float, typer.Option("--test-fraction", help="Per-user test share when --data is a single file.")
]
CodebookOpt = Annotated[int, typer.Option("--codebook-size", "-c", help="c: number of meta-embeddings.")]
PerEntityOpt = Annotated[int, typer.Option("--per-entity", "-t", help="t: meta-embeddings per entity.")]
AnchorOpt = Annotated[float, typer.Option("--anchor-weight", help="w*: initial weight of the anchor.")]
InitOpt = Annotated[str, typer.Option("--init", help="Initial anchors: metis or random.")]
DimOpt = Annotated[int, typer.Option("--dim", "-d", help="d: embedding dimension.")]
LayersOpt = Annotated[int, typer.Option("--layers", "-L", help="L: LightGCN layers.")]
UpdateOpt = Annotated[int, typer.Option("--update-every", "-m", help="m: epochs between assignment updates.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Maximum number of epochs.")]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        help="Training positives per batch (16,384 on LightGCN for legcf and full, tuned; 65,536 otherwise).",
    ),
]
NegOpt = Annotated[int, typer.Option("--negatives", help="Sampled negatives per positive.")]
LrOpt = Annotated[
    float | None,
    typer.Option(
        "--lr",
        help="Adam learning rate, matched to --batch-size (LEGCF on LightGCN 0.1, "
        "other layers on LightGCN 0.05, NGCF and LR-GCCF 0.005).",
    ),
]
L2Opt = Annotated[float, typer.Option("--l2", help="lambda: L2 penalty on layer-0 embeddings.")]
PatienceOpt = Annotated[
    int, typer.Option("--patience", help="Stop after this many evaluations without improvement.")
]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Epochs between validation runs.")]
LrDecayOpt = Annotated[
    float,
    typer.Option("--lr-decay", help="Multiply the learning rate by this after a validation without gain."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")]
EmbeddingOpt = Annotated[
    str,
    typer.Option("--embedding", help="Embedding layer: legcf, full (one row per entity), qr or pep."),
]
BackboneOpt = Annotated[str, typer.Option("--backbone", help="GNN: lightgcn, ngcf or lrgccf.")]
BudgetOpt = Annotated[
    int | None,
    typer.Option(
        "--budget",
        help="Parameters a qr or pep table may store. Default: what LEGCF stores at this run's c and t.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
ModelOpt = Annotated[
    str, typer.Option("--model", help="Which trained model: auto (refine if present), pretrain or refine.")
]

DEFAULT_TRAIN = TrainConfig()
DEFAULT_REFINE = RefineConfig()


def layer_defaults(
    embedding: str, backbone: str, lr: float | None, batch_size: int | None
) -> tuple[float, int]:
    """--lr and --batch-size as given, else the values tuned for this layer."""
    return (
        tuned(embedding, backbone).lr if lr is None else lr,
        tuned(embedding, backbone).batch_size if batch_size is None else batch_size,
    )


def train_config(
    epochs: int,
    batch_size: int,
    negatives: int,
    lr: float,
    l2: float,
    patience: int,
    eval_every: int,
    lr_decay: float,
    seed: int,
) -> TrainConfig:
    """The training options shared by pretrain, refine and run."""
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        negatives=negatives,
        lr=lr,
        l2=l2,
        patience=patience,
        eval_every=eval_every,
        lr_decay=lr_decay,
        seed=seed,
    )


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_mapping(title: str, values: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in values.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out_console.print(table)


# ------------------------------------------------------------------ commands


@app.command()
@user_errors
def prepare(
    run_dir: RunDirArg,
    data: DataOpt = None,
    seed: SeedOpt = 2024,
    test_fraction: TestFractionOpt = 0.2,
) -> None:
    """Read, validate and split a dataset into RUN_DIR."""
    with RichReporter() as reporter:
        summary = stages.prepare(RunDir(run_dir), data or demo_dataset(), seed, test_fraction, reporter)
    print_mapping("prepared", summary)


@app.command()
@user_errors
def partition(
    run_dir: RunDirArg,
    codebook_size: CodebookOpt = 500,
    per_entity: PerEntityOpt = 2,
    anchor_weight: AnchorOpt = 0.5,
    init: InitOpt = "metis",
    seed: SeedOpt = 2024,
) -> None:
    """Initial assignment S from a METIS (or random) partition."""
    config = stages.PartitionConfig(codebook_size, per_entity, anchor_weight, init, seed)
    with RichReporter() as reporter:
        metrics = stages.partition(RunDir(run_dir), config, reporter)
    print_mapping("partition", metrics)


@app.command()
@user_errors
def pretrain(
    run_dir: RunDirArg,
    dim: DimOpt = 128,
    layers: LayersOpt = 3,
    epochs: EpochsOpt = DEFAULT_TRAIN.epochs,
    batch_size: BatchOpt = None,
    negatives: NegOpt = DEFAULT_TRAIN.negatives,
    lr: LrOpt = None,
    l2: L2Opt = DEFAULT_TRAIN.l2,
    patience: PatienceOpt = DEFAULT_TRAIN.patience,
    eval_every: EvalEveryOpt = DEFAULT_TRAIN.eval_every,
    lr_decay: LrDecayOpt = DEFAULT_TRAIN.lr_decay,
    embedding: EmbeddingOpt = "legcf",
    backbone: BackboneOpt = "lightgcn",
    budget: BudgetOpt = None,
    seed: SeedOpt = 2024,
    device: DeviceOpt = "auto",
) -> None:
    """Learn the embedding layer (LEGCF: the codebook with S fixed; PEP: prune to the budget);
    keep the best on validation NDCG@20."""
    lr, batch_size = layer_defaults(embedding, backbone, lr, batch_size)
    config = stages.PretrainConfig(
        dim,
        layers,
        train_config(epochs, batch_size, negatives, lr, l2, patience, eval_every, lr_decay, seed),
        embedding,
        backbone,
        budget,
    )
    with RichReporter() as reporter:
        metrics = stages.pretrain(RunDir(run_dir), config, resolve_device(device), reporter)
    print_mapping("pretrain (best on valid)", metrics)


@app.command()
@user_errors
def refine(
    run_dir: RunDirArg,
    update_every: UpdateOpt = DEFAULT_REFINE.update_every,
    epochs: EpochsOpt = DEFAULT_REFINE.train.epochs,
    batch_size: BatchOpt = None,
    negatives: NegOpt = DEFAULT_REFINE.train.negatives,
    lr: LrOpt = None,
    l2: L2Opt = DEFAULT_REFINE.train.l2,
    patience: PatienceOpt = DEFAULT_REFINE.train.patience,
    eval_every: EvalEveryOpt = DEFAULT_REFINE.train.eval_every,
    lr_decay: LrDecayOpt = DEFAULT_REFINE.train.lr_decay,
    seed: SeedOpt = 2024,
    device: DeviceOpt = "auto",
) -> None:
    """LEGCF: alternate training with closed-form assignment updates every m epochs.
    PEP: retrain the pruned table from its initial values."""
    embedding, backbone = stages.trained_layer(RunDir(run_dir))
    lr, batch_size = layer_defaults(embedding, backbone, lr, batch_size)
    config = stages.RefineConfig(
        update_every,
        train_config(epochs, batch_size, negatives, lr, l2, patience, eval_every, lr_decay, seed),
    )
    with RichReporter() as reporter:
        metrics = stages.refine(RunDir(run_dir), config, resolve_device(device), reporter)
    print_mapping("refine (best on valid)", metrics)


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LegcfError(f"--k must be a comma-separated list of integers, got {text!r}") from None
    return ks


@app.command()
@user_errors
def evaluate(
    run_dir: RunDirArg,
    split: Annotated[str, typer.Option("--split", help="valid or test.")] = "test",
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "10,20",
    model: ModelOpt = "auto",
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Recall@K and NDCG@K with full ranking over all items."""
    with RichReporter() as reporter:
        result = stages.evaluate_run(
            RunDir(run_dir), split, parse_ks(k), model, resolve_device(device), reporter
        )
    if as_json:
        print_json(result)
    else:
        print_mapping(f"{result['model']} on {split}", result)


@app.command()
@user_errors
def export(
    run_dir: RunDirArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Model file (default RUN_DIR/model.safetensors).")
    ] = None,
    model: ModelOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Write one compact safetensors model file."""
    result = stages.export(RunDir(run_dir), output, model)
    if as_json:
        print_json(result)
    else:
        print_mapping("exported", result)


@app.command()
@user_errors
def inspect(
    path: Annotated[Path, typer.Argument(help="A run directory or an exported model file.")],
    model: ModelOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Parameters, bytes, sparsity and bucket usage of a model."""
    summary = stages.inspect_path(path, model)
    if as_json:
        print_json(summary)
        return
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    print_mapping(f"model ({summary['source']})", flat)
    for key, value in summary.items():
        if isinstance(value, dict):
            print_mapping(key, value)


@app.command()
@user_errors
def run(
    run_dir: RunDirArg,
    data: DataOpt = None,
    codebook_size: CodebookOpt = 500,
    per_entity: PerEntityOpt = 2,
    anchor_weight: AnchorOpt = 0.5,
    init: InitOpt = "metis",
    dim: DimOpt = 128,
    layers: LayersOpt = 3,
    embedding: EmbeddingOpt = "legcf",
    backbone: BackboneOpt = "lightgcn",
    budget: BudgetOpt = None,
    update_every: UpdateOpt = DEFAULT_REFINE.update_every,
    pretrain_epochs: Annotated[
        int, typer.Option("--pretrain-epochs", help="Maximum pretrain epochs.")
    ] = DEFAULT_TRAIN.epochs,
    refine_epochs: Annotated[
        int, typer.Option("--refine-epochs", help="Maximum refine epochs.")
    ] = DEFAULT_REFINE.train.epochs,
    batch_size: BatchOpt = None,
    negatives: NegOpt = DEFAULT_TRAIN.negatives,
    lr: LrOpt = None,
    l2: L2Opt = DEFAULT_TRAIN.l2,
    patience: PatienceOpt = DEFAULT_TRAIN.patience,
    eval_every: EvalEveryOpt = DEFAULT_TRAIN.eval_every,
    lr_decay: LrDecayOpt = DEFAULT_TRAIN.lr_decay,
    refine_lr_decay: Annotated[
        float,
        typer.Option("--refine-lr-decay", help="--lr-decay for the refine stage (default: constant lr)."),
    ] = DEFAULT_REFINE.train.lr_decay,
    seed: SeedOpt = 2024,
    test_fraction: TestFractionOpt = 0.2,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """All stages in order with one config; prints test metrics and model size.

    full and qr tables have no partition or refine stage; a qr or pep table
    gets LEGCF's budget at --codebook-size and --per-entity unless --budget is given."""
    target = RunDir(run_dir)
    dev = resolve_device(device)
    lr, batch_size = layer_defaults(embedding, backbone, lr, batch_size)
    pre_cfg = train_config(
        pretrain_epochs, batch_size, negatives, lr, l2, patience, eval_every, lr_decay, seed
    )
    ref_cfg = train_config(
        refine_epochs, batch_size, negatives, lr, l2, patience, eval_every, refine_lr_decay, seed
    )
    partition_cfg = stages.PartitionConfig(codebook_size, per_entity, anchor_weight, init, seed)
    pretrain_cfg = stages.PretrainConfig(dim, layers, pre_cfg, embedding, backbone, budget)
    with RichReporter() as reporter:
        summary = stages.run_all(
            target,
            data or demo_dataset(),
            partition_cfg,
            pretrain_cfg,
            stages.RefineConfig(update_every, ref_cfg),
            dev,
            test_fraction,
            reporter,
        )
    if as_json:
        print_json(summary)
    else:
        print_mapping("legcf run: test metrics of the kept model", summary)


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LegcfError(f"--seeds must be a comma-separated list of integers, got {text!r}") from None


@app.command()
@user_errors
def compare(
    out_dir: Annotated[Path, typer.Argument(help="Output directory: runs/, <set>.md, .json and .png.")],
    data: DataOpt = None,
    set_names: Annotated[
        list[str],
        typer.Option("--set", help=f"Named configuration set, repeatable: {', '.join(sets.SETS)}."),
    ] = ["table2"],  # noqa: B006 (typer needs a list default)
    seeds: Annotated[
        str, typer.Option("--seeds", help="Seeds, comma-separated; results are averaged.")
    ] = "2024",
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Cap on pretrain and refine epochs (smoke runs).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Replace every configuration's batch size.")
    ] = None,
    dim: Annotated[int | None, typer.Option("--dim", help="Replace every configuration's d.")] = None,
    codebook_size: Annotated[
        int | None, typer.Option("--codebook-size", help="Replace c (except in the c sweep).")
    ] = None,
    device: DeviceOpt = "auto",
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Train nothing: tables and plots from finished runs.")
    ] = False,
    list_sets: Annotated[
        bool, typer.Option("--list", help="Print the sets and their configurations.")
    ] = False,
) -> None:
    """Run named sets of configurations (baselines, ablations, backbones, sweeps) and
    write tables and plots. Finished configurations are skipped, so an interrupted
    comparison resumes where it stopped."""
    if list_sets:
        for name, rows in sets.SETS.items():
            out_console.print(f"[bold]{name}[/]: {sets.TITLES[name]}")
            for row in rows:
                out_console.print(f"  {row.name:<22} {row.key()}  model={row.model}", highlight=False)
        return
    overrides = sets.Overrides(epochs, batch_size, dim, codebook_size)
    command = compare_command(out_dir, data, set_names, seeds, overrides)
    with RichReporter() as reporter:
        tables = runner.compare(
            out_dir,
            set_names,
            data or demo_dataset(),
            parse_seeds(seeds),
            resolve_device(device),
            overrides,
            reporter,
            train=not report_only,
        )
    for path in write_report(out_dir, tables, command):
        print(path.read_text())


def compare_command(
    out_dir: Path, data: Path | None, set_names: list[str], seeds: str, overrides: sets.Overrides
) -> str:
    """The command line that reproduces a comparison, for its tables."""
    words = ["legcf compare", str(out_dir)]
    if data is not None:
        words += ["--data", str(data)]
    words += [f"--set {name}" for name in set_names] + ["--seeds", seeds]
    for name, value in vars(overrides).items():
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(words)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":
    main()
