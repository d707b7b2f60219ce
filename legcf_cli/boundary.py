"""The CLI's one error boundary: every failure a user can cause ends as one line on
stderr, ``error: <message>``, and an exit code.

- the engine's :class:`~legcf_core.errors.LegcfError`: exit 1; a setting the
  engine names (``ConfigError``, ``TrainingError``) is shown as the flag that sets it;
- a bad command line (unknown option, a choice misspelt, a missing argument): exit 2;
- Ctrl-C: exit 130.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from contextlib import suppress
from typing import Any

import typer
from typer.core import TyperGroup

from legcf_cli.engine import launched_with_ranks
from legcf_cli.options import flag_names
from legcf_cli.output import error_line
from legcf_core.errors import LegcfError

try:  # recent Typer vendors Click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover (Typer on Click)
    from click.exceptions import ClickException


def user_message(exc: LegcfError, command: str | None) -> str:
    """An engine error as the user reads it: config fields named by their flags."""
    return exc.render(flag_names(command))


def usage_message(exc: ClickException) -> str:
    """A command-line error and where to read about the command."""
    message = exc.format_message().rstrip(".")
    context = getattr(exc, "ctx", None)
    if context is not None:
        message += f" (see '{context.command_path} --help')"
    return message


class LegcfGroup(TyperGroup):
    """The ``legcf`` group with the error boundary around parsing and every command."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LegcfError as exc:
            error_line(user_message(exc, ctx.invoked_subcommand))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            error_line("interrupted; the files already written are intact")
            raise typer.Exit(130) from None

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare 'legcf': the help, not an error
                if exc.format_message():
                    typer.echo(exc.format_message(), err=True)
            else:
                error_line(usage_message(exc))
            sys.exit(exc.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        exit_launched(code if isinstance(code, int) else 0)
        sys.exit(code if isinstance(code, int) else 0)


def exit_launched(code: int) -> None:
    """A process torchrun launched as one of several ranks ends here, once its command is over
    and its process group left: flushed, then ``os._exit``, past the interpreter's teardown. There
    the C++ threads of torch.distributed's store and gloo could be destroyed unjoined, and a rank
    that had finished its work died of SIGABRT ("terminate called without an active exception"),
    failing the whole launch about once in twelve (docs/scaling.md). Any other process returns
    (one that only sets WORLD_SIZE, as a test of the CLI in its own process does, included)."""
    import os

    if not launched_with_ranks() or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)
