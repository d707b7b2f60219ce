"""The ``legcf`` command line: the app, its global options and its commands.

Commands live in :mod:`legcf_cli.commands`, their options in
:mod:`legcf_cli.options`; errors end at :mod:`legcf_cli.boundary`. Nothing here
loads the engine, so ``legcf --help`` answers at once.
"""

from __future__ import annotations

import inspect
from importlib import metadata
from typing import Annotated

import typer

from legcf_cli import engine
from legcf_cli.boundary import LegcfGroup
from legcf_cli.commands import compare, serving, stages, synth, trained
from legcf_cli.reporting import Settings, configure_logging

app = typer.Typer(
    name="legcf",
    cls=LegcfGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def unwrapped_help(doc: str | None) -> str | None:
    """A docstring as help: each paragraph on one line, so the terminal (not the source's line
    breaks) decides where it wraps; Typer keeps single line breaks after the first paragraph."""
    if doc is None:
        return None
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


for command in (
    stages.prepare,
    stages.partition,
    stages.pretrain,
    stages.refine,
    trained.evaluate,
    trained.export,
    trained.inspect,
    stages.run,
    serving.recommend,
    serving.serve,
    compare.compare,
):
    app.command(help=unwrapped_help(command.__doc__))(command)
app.command("fold-in", help=unwrapped_help(serving.fold_in.__doc__))(serving.fold_in)
app.command(help=unwrapped_help(synth.synth.__doc__))(synth.synth)


def version() -> str:
    """The installed package's version, else the source tree's."""
    try:
        return metadata.version("legcf")
    except metadata.PackageNotFoundError:
        import legcf_core

        return getattr(legcf_core, "__version__", "unknown")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"legcf {version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress and no notes; errors still print.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")] = False,
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Lightweight embeddings for graph collaborative filtering (LEGCF, SIGIR'24), stage by stage.

    Results go to stdout; progress to stderr, as bars on a terminal and as plain
    lines otherwise. An error is one 'error:' line on stderr."""
    ctx.obj = Settings(quiet=quiet, verbose=verbose)
    configure_logging(ctx.obj)
    engine.refuse_launch_without_training(ctx.invoked_subcommand)


def main() -> None:
    try:
        app(prog_name="legcf")
    except KeyboardInterrupt:  # before a command's own boundary is in place (start-up)
        typer.echo("error: interrupted; the files already written are intact", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
