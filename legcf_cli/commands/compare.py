"""``legcf compare``: run named sets of configurations through the engine's harness,
then write and print their tables (:mod:`legcf_cli.compare_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from legcf_cli import engine
from legcf_cli.options import (
    DataOpt,
    DeviceOpt,
    OutDirArg,
    SeedsOpt,
    SetName,
    SetsOpt,
    Validation,
    demo_dataset,
    parse_ints,
)
from legcf_cli.output import print_sets
from legcf_cli.reporting import open_reporter
from legcf_core.experiments.sets import SETS, TITLES, Overrides

CapOpt = Annotated[
    int | None, typer.Option("--epochs", help="Cap on pretrain and refine epochs (smoke runs).")
]
BatchOpt = Annotated[
    int | None, typer.Option("--batch-size", help="Replace every configuration's batch size.")
]
DimOpt = Annotated[int | None, typer.Option("--dim", help="Replace every configuration's d.")]
CodebookOpt = Annotated[
    int | None, typer.Option("--codebook-size", help="Replace c (except in the c sweep).")
]
ProtocolOpt = Annotated[
    Validation | None,
    typer.Option(
        "--validation",
        help="Validation for every run (as in prepare): test-third (the default), train-fraction or none.",
    ),
]
ReportOnlyOpt = Annotated[
    bool, typer.Option("--report-only", help="Train nothing: tables and plots from finished runs.")
]
DEFAULT_SET = SetName("table2")
ListOpt = Annotated[bool, typer.Option("--list", help="Print the sets and their configurations.")]


def compare(
    ctx: typer.Context,
    out_dir: OutDirArg,
    data: DataOpt = None,
    sets: SetsOpt = [DEFAULT_SET],  # noqa: B006 (Typer needs a list default)
    seeds: SeedsOpt = "2024",
    epochs: CapOpt = None,
    batch_size: BatchOpt = None,
    dim: DimOpt = None,
    codebook_size: CodebookOpt = None,
    validation: ProtocolOpt = None,
    device: DeviceOpt = "auto",
    report_only: ReportOnlyOpt = False,
    list_sets: ListOpt = False,
) -> None:
    """Run named sets of configurations (baselines, ablations, backbones, sweeps) and
    write tables and plots. Finished configurations are skipped, so an interrupted
    comparison resumes where it stopped."""
    if list_sets:
        print_sets(SETS, TITLES)
        return
    names = [name.value for name in sets]
    overrides = Overrides(epochs, batch_size, dim, codebook_size, validation and validation.value)
    from legcf_cli.compare_report import write_report  # writes through the engine: loaded on use

    harness = engine.runner()
    with open_reporter(ctx) as reporter:
        tables = harness.compare(
            out_dir,
            names,
            data or demo_dataset(),
            list(parse_ints(seeds)),
            engine.device(device),
            overrides,
            reporter,
            train=not report_only,
        )
    for path in write_report(out_dir, tables, command_line(out_dir, data, names, seeds, overrides)):
        print(path.read_text())


def command_line(out_dir: Path, data: Path | None, sets: list[str], seeds: str, overrides: Overrides) -> str:
    """The command line that reproduces a comparison, for its tables."""
    words = ["legcf compare", str(out_dir)]
    if data is not None:
        words += ["--data", str(data)]
    words += [f"--set {name}" for name in sets] + ["--seeds", seeds]
    for name, value in vars(overrides).items():
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(words)
