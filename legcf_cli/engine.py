"""The engine, loaded when a command runs and never when the CLI is imported, so
``legcf --help`` and parse errors answer without loading torch."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any


def stages() -> ModuleType:
    """:mod:`legcf_core.stages`, with the process set up for training."""
    from legcf_core import stages as module

    _set_up_process()
    return module


def runner() -> ModuleType:
    """:mod:`legcf_core.experiments.runner`, the comparison harness, with the process set up."""
    from legcf_core.experiments import runner as module

    _set_up_process()
    return module


def _set_up_process() -> None:
    from legcf_core.runtime import keep_freed_memory

    keep_freed_memory()


def run_dir(path: Path) -> Any:
    """The :class:`~legcf_core.artifacts.RunDir` at ``path``."""
    from legcf_core.artifacts import RunDir

    return RunDir(path)


def device(name: str) -> Any:
    """The torch device ``--device`` names (cpu, cuda, cuda:N or auto)."""
    from legcf_core.runtime import resolve_device

    return resolve_device(name)
