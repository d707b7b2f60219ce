"""The commands over a trained model: ``evaluate`` scores it, ``export`` writes it as a
self-contained file, ``inspect`` reports what it stores. Each reads a run directory (and
``inspect`` an exported file too) and changes nothing in it but the evaluation record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from legcf_cli import engine
from legcf_cli.options import (
    CodesOpt,
    CompactOpt,
    DeviceOpt,
    DtypeOpt,
    EvalUsersOpt,
    FitRoundsOpt,
    JsonOpt,
    KsOpt,
    ModelOpt,
    OutputOpt,
    PerUserOpt,
    PlotDirOpt,
    RunDirArg,
    SeedOpt,
    SeenOpt,
    SplitOpt,
    parse_ints,
)
from legcf_cli.output import print_nested, show
from legcf_cli.reporting import open_reporter
from legcf_core.config import TrainConfig

AUTO = "auto"
DEFAULT_SEED = TrainConfig().seed


def evaluate(
    ctx: typer.Context,
    run_dir: RunDirArg,
    split: SplitOpt = "test",
    k: KsOpt = "10,20",
    model: ModelOpt = AUTO,
    device: DeviceOpt = AUTO,
    per_user: PerUserOpt = None,
    eval_users: EvalUsersOpt = None,
    seed: SeedOpt = DEFAULT_SEED,
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
