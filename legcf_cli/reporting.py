"""How the CLI shows the engine's progress on stderr, chosen once per command.

- a terminal: Rich progress bars with the loss, the validation metric and the
  time left; log lines and notes above them;
- anything else (a file, a pipe, CI): plain lines, no carriage returns and no
  colours: a counted task's start, each engine log line (one per epoch with
  loss, valid ndcg@20 and seconds), notes, and each task's end with its time;
- ``--quiet``: nothing; errors are printed by the CLI's boundary regardless.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import typer

from legcf_core.progress import SilentTask


@dataclass(frozen=True)
class Settings:
    """The global options, kept on the Typer context for the commands."""

    quiet: bool = False
    verbose: bool = False


def configure_logging(settings: Settings) -> None:
    """legcf's loggers at DEBUG with -v, ERROR with -q, else WARNING; with -v and no
    handler yet, a Rich handler on a terminal and a plain one otherwise."""
    level = logging.DEBUG if settings.verbose else logging.ERROR if settings.quiet else logging.WARNING
    for name in ("legcf_core", "legcf_cli"):
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    if settings.verbose and not root.handlers:
        if sys.stderr.isatty():
            from rich.logging import RichHandler

            root.addHandler(RichHandler(show_path=False))
        else:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)


def open_reporter(ctx: typer.Context) -> Any:
    """The reporter for this invocation's settings and stderr (a context manager)."""
    settings = ctx.find_object(Settings) or Settings()
    if settings.quiet:
        return QuietReporter()
    if sys.stderr.isatty():
        return RichReporter()
    return PlainReporter()


class QuietReporter:
    """Shows nothing."""

    def __enter__(self) -> QuietReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def task(self, description: str, total: float | None, **fields: Any) -> SilentTask:
        return SilentTask()

    def note(self, message: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass


def _line(message: str) -> None:
    typer.echo(message, err=True)


class _PlainTask(SilentTask):
    def __init__(self, description: str, total: float | None) -> None:
        self.description = description
        self.started = time.perf_counter()
        self.closed = False
        if total:  # a task of unknown length says nothing until it ends
            _line(f"{description}: {total:,.0f} to do")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _line(f"{self.description}: done in {time.perf_counter() - self.started:.1f}s")


class PlainReporter(QuietReporter):
    """One plain line per event, for logs."""

    def __enter__(self) -> PlainReporter:
        return self

    def task(self, description: str, total: float | None, **fields: Any) -> _PlainTask:
        return _PlainTask(description, total)

    def note(self, message: str) -> None:
        _line(f"note: {message}")

    def log(self, message: str) -> None:
        _line(message)


class RichReporter:
    """Each engine task as a Rich progress bar on a terminal's stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TextColumn("[cyan]{task.fields[figures]}"),
            console=self.console,
        )

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # leave the error line alone on stderr
            self.progress.live.transient = True
            for task in self.progress.tasks:
                self.progress.update(task.id, visible=False)
        self.progress.stop()

    def task(self, description: str, total: float | None, **fields: Any) -> _RichTask:
        task_id = self.progress.add_task(description, total=total, figures=figures(fields))
        return _RichTask(self.progress, task_id)

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]note:[/] {message}", highlight=False)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)


def figures(fields: dict[str, Any]) -> str:
    """The figures a user watches: loss and validation NDCG@20, when a task has them."""
    parts = []
    loss = fields.get("loss")
    if loss is not None and not math.isnan(loss):
        parts.append(f"loss {loss:.4f}")
    ndcg = fields.get("ndcg")
    if ndcg is not None and not math.isnan(ndcg):
        parts.append(f"valid ndcg@20 {ndcg:.4f}")
    return "  ".join(parts)


_PROGRESS_FIELDS = ("total", "completed", "description", "visible")


class _RichTask:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self.progress = progress
        self.task_id = task_id
        self.fields: dict[str, Any] = {}

    def advance(self, steps: float = 1, **fields: Any) -> None:
        self.progress.update(self.task_id, advance=steps, **self._figures(fields))

    def update(self, **fields: Any) -> None:
        known = {name: fields.pop(name) for name in _PROGRESS_FIELDS if name in fields}
        self.progress.update(self.task_id, **known, **self._figures(fields))

    def _figures(self, fields: dict[str, Any]) -> dict[str, str]:
        if not fields:
            return {}
        self.fields.update(fields)
        return {"figures": figures(self.fields)}

    def close(self) -> None:
        task = next((t for t in self.progress.tasks if t.id == self.task_id), None)
        if task is not None and task.total is None:
            self.progress.update(self.task_id, total=1, completed=1)
        self.progress.stop_task(self.task_id)
