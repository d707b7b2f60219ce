"""How the engine reports progress without printing: a small reporter contract.

Stages call ``reporter.task(...)`` for each long step and update it; the CLI
passes a Rich implementation, tests and library users the silent default.
"""

from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    def advance(self, steps: float = 1, **fields: Any) -> None: ...

    def update(self, **fields: Any) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: float | None, **fields: Any) -> Task: ...

    def note(self, message: str) -> None: ...

    def log(self, message: str) -> None: ...


class SilentTask:
    """A task that shows nothing: what silent and quiet reporters hand out."""

    def advance(self, steps: float = 1, **fields: Any) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class SilentReporter:
    """Reports nothing; the default for library use and tests."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.lines: list[str] = []

    def task(self, description: str, total: float | None, **fields: Any) -> Task:
        return SilentTask()

    def note(self, message: str) -> None:
        self.notes.append(message)

    def log(self, message: str) -> None:
        self.lines.append(message)
