"""Shared fixtures: small datasets written into tmp dirs and run directories on
the shipped demo data (prepared, partitioned, fully trained, exported).

The runs are built once per session through the CLI with tiny settings and
are read-only: tests that modify a run directory work on a copy (``copy_run``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    CODEBOOK,
    DIM,
    LAYERS,
    PER_ENTITY,
    PRETRAIN_EPOCHS,
    REFINE_EPOCHS,
    SEED,
    TRAIN_OPTS,
    copy_run,
    invoke_ok,
    write_lightgcn,
)
from hypothesis import settings

from legcf_cli.options import demo_dataset

# Property tests stay small and leave no example database in the checkout.
settings.register_profile("legcf", max_examples=25, deadline=None, database=None)
settings.load_profile("legcf")


@pytest.fixture(scope="session")
def demo_path() -> Path:
    path = demo_dataset()
    assert (path / "train.txt").is_file() and (path / "test.txt").is_file()
    return path


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A tiny hand-made LightGCN dataset (another dataset than the demo)."""
    root = tmp_path_factory.mktemp("small_dataset")
    train = {u: [(u + k) % 12 for k in range(4)] for u in range(10)}
    test = {u: [(u + 5) % 12, (u + 7) % 12] for u in range(10)}
    write_lightgcn(root / "train.txt", train)
    write_lightgcn(root / "test.txt", test)
    return root


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory, demo_path) -> Path:
    """The demo data after ``prepare`` only (read-only: copy before changing it)."""
    run_dir = tmp_path_factory.mktemp("prepared") / "run"
    invoke_ok("prepare", run_dir, "--data", demo_path, "--seed", SEED)
    return run_dir


@pytest.fixture(scope="session")
def partitioned_run(tmp_path_factory, prepared_run) -> Path:
    """The demo data after ``prepare`` and ``partition`` (read-only)."""
    run_dir = copy_run(prepared_run, tmp_path_factory.mktemp("partitioned") / "run")
    invoke_ok("partition", run_dir, "-c", CODEBOOK, "-t", PER_ENTITY, "--seed", SEED)
    return run_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, partitioned_run) -> Path:
    """prepare + partition + pretrain + refine on the demo data (tiny settings)."""
    run_dir = copy_run(partitioned_run, tmp_path_factory.mktemp("trained") / "run")
    invoke_ok("pretrain", run_dir, "--dim", DIM, "--layers", LAYERS, "--epochs", PRETRAIN_EPOCHS, *TRAIN_OPTS)
    invoke_ok("refine", run_dir, "--epochs", REFINE_EPOCHS, "--update-every", 1, *TRAIN_OPTS)
    return run_dir


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory, trained_run) -> Path:
    """The trained run exported to a file outside the run directory."""
    work = copy_run(trained_run, tmp_path_factory.mktemp("exported") / "run")
    output = work.parent / "model.safetensors"
    invoke_ok("export", work, "-o", output)
    return output
