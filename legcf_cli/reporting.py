"""Rich progress bars and one-line errors for the CLI (stderr only)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

err_console = Console(stderr=True)


class FiguresColumn(ProgressColumn):
    """The figures a user watches: loss and validation NDCG@20, when a task has them."""

    def render(self, task) -> Text:
        parts = []
        loss = task.fields.get("loss")
        if loss is not None and not math.isnan(loss):
            parts.append(f"loss {loss:.4f}")
        ndcg = task.fields.get("ndcg")
        if ndcg is not None and not math.isnan(ndcg):
            parts.append(f"valid ndcg@20 {ndcg:.4f}")
        return Text("  ".join(parts), style="cyan")


class _RichTask:
    def __init__(self, progress: Progress, task_id) -> None:
        self.progress = progress
        self.task_id = task_id

    def advance(self, steps: float = 1, **fields: Any) -> None:
        self.progress.update(self.task_id, advance=steps, **fields)

    def update(self, **fields: Any) -> None:
        self.progress.update(self.task_id, **fields)

    def close(self) -> None:
        task = self.progress._tasks.get(self.task_id)
        if task is not None and task.total is None:
            self.progress.update(self.task_id, total=1, completed=1)
        self.progress.stop_task(self.task_id)


class RichReporter:
    """Shows each engine task as a Rich progress bar on stderr."""

    def __init__(self, console: Console = err_console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            FiguresColumn(),
            console=console,
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
        return _RichTask(self.progress, self.progress.add_task(description, total=total, **fields))

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]note:[/] {message}")

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)
