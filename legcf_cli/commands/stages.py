"""The commands that train: one per stage that writes a run (prepare, partition, pretrain,
refine) and ``run`` for all of them with the test evaluation. Each resolves its options into
the engine's configs, checks them before loading the engine, forwards, and prints the result.
The commands that read a trained model are in :mod:`legcf_cli.commands.trained`.

Defaults come from :mod:`legcf_core.config`; an unset ``--lr`` or ``--batch-size`` takes
the value tuned for the layer and backbone (:mod:`legcf_core.tuning`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from legcf_cli import engine
from legcf_cli.options import (
    AnchorOpt,
    BackboneOpt,
    BatchOpt,
    BudgetOpt,
    CodebookOpt,
    CompressionOpt,
    DataOpt,
    DeviceOpt,
    DimOpt,
    EmbeddingOpt,
    EpochsOpt,
    EvalEveryOpt,
    EvalUsersOpt,
    HoldoutOpt,
    Init,
    InitOpt,
    ItemColOpt,
    JsonOpt,
    L2Opt,
    LayersOpt,
    LrDecayOpt,
    LrOpt,
    LrScheduleOpt,
    MinRatingOpt,
    NegOpt,
    Others,
    OthersOpt,
    PatienceOpt,
    PerEntityOpt,
    PretrainEpochsOpt,
    RatingColOpt,
    RefineEpochsOpt,
    RefineLrDecayOpt,
    RunDirArg,
    SeedOpt,
    ShardOpt,
    SizingBudgetOpt,
    SizingDimOpt,
    SolverOpt,
    TeacherOpt,
    TestFractionOpt,
    TimeColOpt,
    UpdateOpt,
    UserColOpt,
    ValidationOpt,
    ValidFractionOpt,
    demo_dataset,
)
from legcf_cli.output import print_mapping, show
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
from legcf_core.registry import resolve_backbone
from legcf_core.tuning import tuned

PREPARE = PrepareConfig()
PARTITION = PartitionConfig()
PRETRAIN = PretrainConfig()
REFINE = RefineConfig()
TRAIN = PRETRAIN.train
AUTO = "auto"


def lr_and_batch(
    embedding: str, backbone: str, lr: float | None, batch_size: int | None, shard: bool = False
) -> tuple[float, int]:
    """--lr and --batch-size as given, else the values tuned for this layer and backbone."""
    defaults = tuned(embedding, resolve_backbone(backbone, embedding, shard))
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
    others: OthersOpt = PARTITION.others,
    seed: SeedOpt = PARTITION.seed,
    compression: CompressionOpt = None,
    budget: SizingBudgetOpt = None,
    dim: SizingDimOpt = PARTITION.dim,
    teacher: TeacherOpt = None,
) -> None:
    """The initial assignment S: METIS anchors, or codes of the graph's spectral rows.

    --init auto (the default) takes METIS anchors on a graph of communities and otherwise S and
    a starting codebook coded from the spectral rows; --init random and --init teacher start
    from a random partition or a teacher run's table. Beside each anchor, S0 takes the other
    parts the entity's edges reach most (--others random: uniform draws, the paper's). c is
    sized to the data unless -c is given.
    """
    config = partitioning(
        codebook_size, per_entity, anchor_weight, init, teacher, seed, (compression, budget, dim), others
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
    others: Others,
) -> PartitionConfig:
    """The partition config; --teacher implies --init teacher where --init was left at its default."""
    chosen = "teacher" if teacher is not None and init.value == PARTITION.init else init.value
    source = None if teacher is None else str(teacher)
    return PartitionConfig(
        codebook_size, per_entity, anchor_weight, chosen, seed, *sizing, source, others.value
    )


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
    lr, batch_size = lr_and_batch(embedding.value, backbone.value, lr, batch_size, shard)
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


def run(
    ctx: typer.Context,
    run_dir: RunDirArg,
    data: DataOpt = None,
    codebook_size: CodebookOpt = PARTITION.codebook_size,
    per_entity: PerEntityOpt = PARTITION.per_entity,
    anchor_weight: AnchorOpt = PARTITION.anchor_weight,
    init: InitOpt = PARTITION.init,
    others: OthersOpt = PARTITION.others,
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
    lr, batch_size = lr_and_batch(embedding.value, backbone.value, lr, batch_size, shard)
    shared, sizing = (batch_size, negatives, lr, l2, patience, eval_every), (compression, budget, dim)
    part = partitioning(codebook_size, per_entity, anchor_weight, init, teacher, seed, sizing, others)
    pretrain_train = training(pretrain_epochs, *shared, lr_decay, seed, lr_schedule.value, eval_users)
    pretrain_config = PretrainConfig(dim, layers, pretrain_train, embedding.value, backbone.value, budget)
    refine_train = training(refine_epochs, *shared, refine_lr_decay, seed, lr_schedule.value, eval_users)
    refine_config = RefineConfig(update_every, refine_train, solver.value)
    prep = PrepareConfig(seed, test_fraction, split.value, validation.value, valid_fraction)
    read = reading(user_col, item_col, rating_col, time_col, min_rating)
    with engine.training_device(device, shard) as chosen, open_reporter(ctx) as reporter:
        run, stages = engine.run_dir(run_dir), (part, pretrain_config, refine_config)
        summary = engine.stages().run_all(  # it checks every config before writing
            run, data or demo_dataset(), *stages, chosen, test_fraction, reporter, protocol=prep, read=read
        )
    show("legcf run: test metrics of the kept model", summary, as_json)
