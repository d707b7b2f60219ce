"""One command per stage, and ``run`` for all of them: each resolves its options into the
engine's configs, checks them before loading the engine, forwards, and prints the result.

Defaults come from :mod:`legcf_core.config`; an unset ``--lr`` or ``--batch-size`` takes
the value tuned for the layer and backbone (:mod:`legcf_core.tuning`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from legcf_cli import engine
from legcf_cli.options import (
    AnchorOpt,
    BackboneOpt,
    BatchOpt,
    BudgetOpt,
    CodebookOpt,
    CodesOpt,
    CompactOpt,
    CompressionOpt,
    DataOpt,
    DeviceOpt,
    DimOpt,
    DtypeOpt,
    EmbeddingOpt,
    EpochsOpt,
    EvalEveryOpt,
    EvalUsersOpt,
    FitRoundsOpt,
    HoldoutOpt,
    Init,
    InitOpt,
    ItemColOpt,
    JsonOpt,
    KsOpt,
    L2Opt,
    LayersOpt,
    LrDecayOpt,
    LrOpt,
    LrScheduleOpt,
    MinRatingOpt,
    ModelOpt,
    NegOpt,
    OutputOpt,
    PatienceOpt,
    PerEntityOpt,
    PerUserOpt,
    PlotDirOpt,
    PretrainEpochsOpt,
    RatingColOpt,
    RefineEpochsOpt,
    RefineLrDecayOpt,
    RunDirArg,
    SeedOpt,
    SeenOpt,
    ShardOpt,
    SizingBudgetOpt,
    SizingDimOpt,
    SolverOpt,
    SplitOpt,
    TeacherOpt,
    TestFractionOpt,
    TimeColOpt,
    UpdateOpt,
    UserColOpt,
    ValidationOpt,
    ValidFractionOpt,
    demo_dataset,
    parse_ints,
)
from legcf_cli.output import print_mapping, print_nested, show
from legcf_cli.reporting import open_reporter
from legcf_core.config import (
    PartitionConfig,
    PrepareConfig,
    PretrainConfig,
    ReadConfig,
    RefineConfig,
    TrainConfig,
    column_choice,
)
from legcf_core.tuning import tuned

PREPARE = PrepareConfig()
PARTITION = PartitionConfig()
PRETRAIN = PretrainConfig()
REFINE = RefineConfig()
TRAIN = PRETRAIN.train
AUTO = "auto"


def lr_and_batch(
    embedding: str, backbone: str, lr: float | None, batch_size: int | None
) -> tuple[float, int]:
    """--lr and --batch-size as given, else the values tuned for this layer and backbone."""
    defaults = tuned(embedding, backbone)
    return (defaults.lr if lr is None else lr, defaults.batch_size if batch_size is None else batch_size)


def training(
    epochs: int,
    batch_size: int,
    negatives: int,
    lr: float,
    l2: float,
    patience: int,
    eval_every: int,
    lr_decay: float,
    seed: int,
    lr_schedule: str = TrainConfig.lr_schedule,
    eval_users: int | None = None,
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
        lr_schedule=lr_schedule,
        eval_users=eval_users,
    )


def reading(
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    time_col: str | None,
    min_rating: float | None,
) -> ReadConfig:
    """The read options as the engine's config, checked before the engine loads."""
    columns = (column_choice(c) for c in (user_col, item_col, rating_col, time_col))
    config = ReadConfig(*columns, min_rating=min_rating)
    config.check()
    return config


def prepare(
    ctx: typer.Context,
    run_dir: RunDirArg,
    data: DataOpt = None,
    seed: SeedOpt = PREPARE.seed,
    test_fraction: TestFractionOpt = PREPARE.test_fraction,
    split: HoldoutOpt = PREPARE.split,
    validation: ValidationOpt = PREPARE.validation,
    valid_fraction: ValidFractionOpt = None,
    user_col: UserColOpt = None,
    item_col: ItemColOpt = None,
    rating_col: RatingColOpt = None,
    time_col: TimeColOpt = None,
    min_rating: MinRatingOpt = None,
) -> None:
    """Read, validate and split a dataset into RUN_DIR (test holdout and validation as chosen)."""
    config = PrepareConfig(seed, test_fraction, split.value, validation.value, valid_fraction)
    config.check()
    read = reading(user_col, item_col, rating_col, time_col, min_rating)
    core = engine.stages()
    with open_reporter(ctx) as reporter:
        run = engine.run_dir(run_dir)
        summary = core.prepare_as(run, data or demo_dataset(), config, reporter, read)
    print_mapping("prepared", summary)


def partition(
    ctx: typer.Context,
    run_dir: RunDirArg,
    codebook_size: CodebookOpt = PARTITION.codebook_size,
    per_entity: PerEntityOpt = PARTITION.per_entity,
    anchor_weight: AnchorOpt = PARTITION.anchor_weight,
    init: InitOpt = PARTITION.init,
    seed: SeedOpt = PARTITION.seed,
    compression: CompressionOpt = None,
    budget: SizingBudgetOpt = None,
    dim: SizingDimOpt = PARTITION.dim,
    teacher: TeacherOpt = None,
) -> None:
    """Initial assignment S from a METIS (or random) partition into c parts (c sized to the
    data unless -c is given), or S and a starting codebook coded from a teacher run's table."""
    config = partitioning(
        codebook_size, per_entity, anchor_weight, init, teacher, seed, (compression, budget, dim)
    )
    config.check()
    core = engine.stages()
    with open_reporter(ctx) as reporter:
        metrics = core.partition(engine.run_dir(run_dir), config, reporter)
    print_mapping("partition", metrics)


def partitioning(
    codebook_size: int | None,
    per_entity: int,
    anchor_weight: float,
    init: Init,
    teacher: Path | None,
    seed: int,
    sizing: tuple[float | None, int | None, int],
) -> PartitionConfig:
    """The partition config; --teacher implies --init teacher where --init was left at its default."""
    chosen = "teacher" if teacher is not None and init.value == PARTITION.init else init.value
    source = None if teacher is None else str(teacher)
    return PartitionConfig(codebook_size, per_entity, anchor_weight, chosen, seed, *sizing, source)


def pretrain(
    ctx: typer.Context,
    run_dir: RunDirArg,
    dim: DimOpt = PRETRAIN.dim,
    layers: LayersOpt = PRETRAIN.layers,
    epochs: EpochsOpt = TRAIN.epochs,
    batch_size: BatchOpt = None,
    negatives: NegOpt = TRAIN.negatives,
    lr: LrOpt = None,
    l2: L2Opt = TRAIN.l2,
    patience: PatienceOpt = TRAIN.patience,
    eval_every: EvalEveryOpt = TRAIN.eval_every,
    eval_users: EvalUsersOpt = None,
    lr_decay: LrDecayOpt = TRAIN.lr_decay,
    lr_schedule: LrScheduleOpt = TRAIN.lr_schedule,
    embedding: EmbeddingOpt = PRETRAIN.embedding,
    backbone: BackboneOpt = PRETRAIN.backbone,
    budget: BudgetOpt = None,
    seed: SeedOpt = TRAIN.seed,
    device: DeviceOpt = AUTO,
    shard: ShardOpt = False,
) -> None:
    """Learn the embedding layer (LEGCF: the codebook with S fixed; PEP: prune to the budget);
    keep the best on validation NDCG@20."""
    lr, batch_size = lr_and_batch(embedding.value, backbone.value, lr, batch_size)
    shared = (batch_size, negatives, lr, l2, patience, eval_every)
    train = training(epochs, *shared, lr_decay, seed, lr_schedule.value, eval_users)
    config = PretrainConfig(dim, layers, train, embedding.value, backbone.value, budget)
    config.check()
    core = engine.stages()
    with engine.training_device(device, shard) as chosen, open_reporter(ctx) as reporter:
        metrics = core.pretrain(engine.run_dir(run_dir), config, chosen, reporter)
    print_mapping("pretrain (best on valid)", metrics)


def refine(
    ctx: typer.Context,
    run_dir: RunDirArg,
    update_every: UpdateOpt = REFINE.update_every,
    solver: SolverOpt = REFINE.solver,
    epochs: EpochsOpt = REFINE.train.epochs,
    batch_size: BatchOpt = None,
    negatives: NegOpt = REFINE.train.negatives,
    lr: LrOpt = None,
    l2: L2Opt = REFINE.train.l2,
    patience: PatienceOpt = REFINE.train.patience,
    eval_every: EvalEveryOpt = REFINE.train.eval_every,
    eval_users: EvalUsersOpt = None,
    lr_decay: LrDecayOpt = REFINE.train.lr_decay,
    lr_schedule: LrScheduleOpt = REFINE.train.lr_schedule,
    seed: SeedOpt = REFINE.train.seed,
    device: DeviceOpt = AUTO,
    shard: ShardOpt = False,
) -> None:
    """LEGCF: alternate training with assignment updates (--solver) every m epochs.
    PEP: retrain the pruned table from its initial values."""
    core = engine.stages()
    run = engine.run_dir(run_dir)
    # only rank 0 goes on: workers need no run directory
    with engine.training_device(device, shard) as chosen:
        lr, batch_size = lr_and_batch(*core.trained_layer(run), lr, batch_size)
        shared = (batch_size, negatives, lr, l2, patience, eval_every)
        train = training(epochs, *shared, lr_decay, seed, lr_schedule.value, eval_users)
        config = RefineConfig(update_every, train, solver.value)
        config.check()
        with open_reporter(ctx) as reporter:
            metrics = core.refine(run, config, chosen, reporter)
    print_mapping("refine (best on valid)", metrics)


def evaluate(
    ctx: typer.Context,
    run_dir: RunDirArg,
    split: SplitOpt = "test",
    k: KsOpt = "10,20",
    model: ModelOpt = AUTO,
    device: DeviceOpt = AUTO,
    per_user: PerUserOpt = None,
    eval_users: EvalUsersOpt = None,
    seed: SeedOpt = TRAIN.seed,
    as_json: JsonOpt = False,
) -> None:
    """Recall, NDCG, Precision, HitRate and MRR at each K, with full ranking over all items
    (for every user, or a seeded sample of --eval-users)."""
    core = engine.stages()
    with open_reporter(ctx) as reporter:
        result = core.evaluate_run(
            engine.run_dir(run_dir),
            split.value,
            parse_ints(k),
            model.value,
            engine.device(device),
            reporter,
            per_user,
            eval_users,
            seed,
        )
    show(f"{result['model']} on {split.value}", result, as_json)


def export(
    run_dir: RunDirArg,
    output: OutputOpt = None,
    model: ModelOpt = AUTO,
    compact: CompactOpt = False,
    dtype: DtypeOpt = "float32",
    seen: SeenOpt = True,
    codes: CodesOpt = None,
    fit_rounds: FitRoundsOpt = 3,
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained model file: exact (the layer, backbone weights and graph), or
    --compact, the serving form (meta-embeddings and t weights an entity)."""
    if not compact and (dtype != "float32" or not seen or codes is not None or fit_rounds != 3):
        raise typer.BadParameter(
            "--dtype, --no-seen, --codes and --fit-rounds apply to --compact only", param_hint="--compact"
        )
    if compact:
        from legcf_core.stages.export_compact import export_compact

        engine.stages()
        result = export_compact(
            engine.run_dir(run_dir),
            output,
            model.value,
            getattr(dtype, "value", dtype),
            seen,
            codes,
            fit_rounds,
        )
    else:
        result = engine.stages().export(engine.run_dir(run_dir), output, model.value)
    show("exported", result, as_json)


def inspect(
    path: Annotated[Path, typer.Argument(help="A run directory or an exported model file.")],
    model: ModelOpt = AUTO,
    plot: PlotDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Parameters, bytes, sparsity and meta-embedding usage of a model; with --plot, pictures of the run."""
    summary = engine.stages().inspect_path(path, model.value)
    written = None
    if plot is not None:
        from legcf_cli.inspect_plots import write_plots

        written = write_plots(path, plot, model.value)
        summary["plots"] = [str(p) for p in written.paths]
        if written.skipped:
            summary["plots_skipped"] = {"plots": written.skipped, "reason": written.reason}
    if as_json:
        show("", summary, as_json=True)
        return
    print_nested(
        f"model ({summary['source']})", {k: v for k, v in summary.items() if not k.startswith("plots")}
    )
    if written is not None:
        for written_path in written.paths:
            typer.echo(f"wrote {written_path}")
        if written.skipped:
            typer.echo(f"skipped {', '.join(written.skipped)}: {written.reason}", err=True)


def run(
    ctx: typer.Context,
    run_dir: RunDirArg,
    data: DataOpt = None,
    codebook_size: CodebookOpt = PARTITION.codebook_size,
    per_entity: PerEntityOpt = PARTITION.per_entity,
    anchor_weight: AnchorOpt = PARTITION.anchor_weight,
    init: InitOpt = PARTITION.init,
    teacher: TeacherOpt = None,
    compression: CompressionOpt = None,
    dim: DimOpt = PRETRAIN.dim,
    layers: LayersOpt = PRETRAIN.layers,
    embedding: EmbeddingOpt = PRETRAIN.embedding,
    backbone: BackboneOpt = PRETRAIN.backbone,
    budget: BudgetOpt = None,
    update_every: UpdateOpt = REFINE.update_every,
    solver: SolverOpt = REFINE.solver,
    pretrain_epochs: PretrainEpochsOpt = TRAIN.epochs,
    refine_epochs: RefineEpochsOpt = REFINE.train.epochs,
    batch_size: BatchOpt = None,
    negatives: NegOpt = TRAIN.negatives,
    lr: LrOpt = None,
    l2: L2Opt = TRAIN.l2,
    patience: PatienceOpt = TRAIN.patience,
    eval_every: EvalEveryOpt = TRAIN.eval_every,
    eval_users: EvalUsersOpt = None,
    lr_decay: LrDecayOpt = TRAIN.lr_decay,
    refine_lr_decay: RefineLrDecayOpt = REFINE.train.lr_decay,
    lr_schedule: LrScheduleOpt = TRAIN.lr_schedule,
    seed: SeedOpt = PARTITION.seed,
    test_fraction: TestFractionOpt = PREPARE.test_fraction,
    split: HoldoutOpt = PREPARE.split,
    validation: ValidationOpt = PREPARE.validation,
    valid_fraction: ValidFractionOpt = None,
    user_col: UserColOpt = None,
    item_col: ItemColOpt = None,
    rating_col: RatingColOpt = None,
    time_col: TimeColOpt = None,
    min_rating: MinRatingOpt = None,
    device: DeviceOpt = AUTO,
    shard: ShardOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """All stages in order with one config; prints test metrics and model size; each layer runs its stages."""
    lr, batch_size = lr_and_batch(embedding.value, backbone.value, lr, batch_size)
    shared, sizing = (batch_size, negatives, lr, l2, patience, eval_every), (compression, budget, dim)
    partition_config = partitioning(codebook_size, per_entity, anchor_weight, init, teacher, seed, sizing)
    pretrain_train = training(pretrain_epochs, *shared, lr_decay, seed, lr_schedule.value, eval_users)
    pretrain_config = PretrainConfig(dim, layers, pretrain_train, embedding.value, backbone.value, budget)
    refine_train = training(refine_epochs, *shared, refine_lr_decay, seed, lr_schedule.value, eval_users)
    refine_config = RefineConfig(update_every, refine_train, solver.value)
    protocol = PrepareConfig(seed, test_fraction, split.value, validation.value, valid_fraction)
    read = reading(user_col, item_col, rating_col, time_col, min_rating)
    options = {"protocol": protocol, "read": read}  # run_all checks every config before writing
    with engine.training_device(device, shard) as chosen, open_reporter(ctx) as reporter:
        run, stages = engine.run_dir(run_dir), (partition_config, pretrain_config, refine_config)
        summary = engine.stages().run_all(
            run, data or demo_dataset(), *stages, chosen, test_fraction, reporter, **options
        )
    show("legcf run: test metrics of the kept model", summary, as_json)
