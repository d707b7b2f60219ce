"""The engine, loaded when a command runs and never when the CLI is imported, so
``legcf --help`` and parse errors answer without loading torch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import typer


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


@contextmanager
def training_device(name: str, shard: bool = False) -> Iterator[Any]:
    """The device a training command runs on. Launched by torchrun with several ranks, this
    joins their process group: rank 0 runs the command's body (and gets ``cuda:LOCAL_RANK``
    on GPUs); every other rank trains alongside it and exits without running the body."""
    from legcf_core import distributed

    chosen = device(name)
    with distributed.training_processes(chosen, shard) as group:
        if group is None:
            yield chosen
            return
        if not group.leader:
            raise typer.Exit(0 if distributed.serve(group) else 1)
        yield group.device


TRAINING_COMMANDS = ("run", "pretrain", "refine")


def launched_with_ranks() -> bool:
    """Whether torchrun (or its environment) started this process as one of several ranks."""
    import os

    return os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1")


def refuse_launch_without_training(command: str | None) -> None:
    """torchrun may launch only the training commands; another would run once per rank."""
    if command not in TRAINING_COMMANDS and launched_with_ranks():
        from legcf_core.errors import DistributedError

        raise DistributedError(
            f"'legcf {command}' runs in one process; launch it without torchrun "
            f"(torchrun launches {', '.join(TRAINING_COMMANDS)})"
        )
