"""The CLI as a shell user meets it: choices checked at parse time, --version, a fast
--help that loads no engine, progress as plain lines off a terminal, -q, and every
error as one line naming the flag to change. Runs are real, on the shipped demo."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers import TRAIN_OPTS, copy_run, invoke, invoke_ok

from legcf_cli.boundary import user_message
from legcf_cli.options import FLAG_NAMES
from legcf_core import config
from legcf_core.errors import ConfigError, DataError
from legcf_core.experiments.sets import SETS
from legcf_core.registry import BACKBONES, LAYERS

HEAVY = (
    "torch",
    "numpy",
    "scipy",
    "matplotlib",
    "fastapi",
    "uvicorn",
    "legcf_core.stages",
    "legcf_core.experiments.runner",
)
TINY_RUN = ["-c", "30", "--dim", "16", "--layers", "2", "--batch-size", "4096", "--device", "cpu"]


def legcf(*args: str | Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess, stderr a pipe (not a terminal)."""
    env = {**os.environ, "COLUMNS": "100"}
    command = [sys.executable, "-m", "legcf_cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def only_line(stderr: str) -> str:
    """The one line stderr holds; fails if it holds more, or blank lines."""
    assert stderr.endswith("\n") and stderr.count("\n") == 1, repr(stderr)
    return stderr.rstrip("\n")


# ------------------------------------------------------------- choices


@pytest.mark.parametrize(
    ("args", "flag", "choices"),
    [
        (["pretrain", "RUN", "--embedding", "legfc"], "--embedding", list(LAYERS)),
        (["pretrain", "RUN", "--backbone", "lightgnc"], "--backbone", list(BACKBONES)),
        (["partition", "RUN", "--init", "metsi"], "--init", list(config.INITS)),
        (["evaluate", "RUN", "--split", "train"], "--split", list(config.SPLITS)),
        (["export", "RUN", "--model", "best"], "--model", list(config.MODEL_CHOICES)),
        (["compare", "OUT", "--set", "table9"], "--set", list(SETS)),
    ],
)
def test_a_misspelt_choice_is_refused_at_parse_time(tmp_path, args, flag, choices):
    args = [str(tmp_path / a) if a in ("RUN", "OUT") else a for a in args]
    result = invoke(*args)
    assert result.exit_code == 2
    line = only_line(result.stderr)
    assert line.startswith("error: ") and flag in line and all(repr(c) in line for c in choices)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        ("pretrain", [*LAYERS, *BACKBONES]),
        ("run", [*LAYERS, *BACKBONES, *config.INITS]),
        ("partition", config.INITS),
        ("evaluate", [*config.SPLITS, *config.MODEL_CHOICES]),
        ("compare", SETS),
    ],
)
def test_help_lists_the_choices(command, choices):
    text = invoke_ok(command, "--help").stdout
    assert all(choice in text for choice in choices), text


def test_bare_legcf_shows_the_help_not_an_error():
    proc = legcf()
    assert "Usage: legcf" in proc.stdout and "pretrain" in proc.stdout
    assert "error:" not in proc.stderr


def test_version():
    result = invoke_ok("--version")
    assert result.stdout.strip() == f"legcf {metadata.version('legcf')}"


# ------------------------------------------------------- a fast --help


def test_help_loads_no_engine():
    """--help, a command's --help and a parse error answer without torch, numpy or the serving stack."""
    probe = (
        "import sys\n"
        "from legcf_cli.app import main\n"
        "for argv in (['--help'], ['pretrain', '--help'], ['serve', '--help'], ['inspect', '--help'],\n"
        "             ['partition', 'x', '--init', 'kmeans']):\n"
        "    sys.argv = ['legcf', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print([name for name in {HEAVY!r} if name in sys.modules], file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "[]"


def test_the_comparison_sets_load_no_engine():
    probe = f"import sys, legcf_core.experiments.sets\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_help_answers_from_a_fresh_process():
    """What keeps it fast is tested above (no torch); its time is bench/cli_startup.py's to print."""
    proc = legcf("--help", timeout=60)
    assert proc.returncode == 0 and "pretrain" in proc.stdout and "recommend" in proc.stdout


# --------------------------------------------------------------- progress


def test_progress_off_a_terminal_is_plain_lines(tmp_path, demo_path):
    proc = legcf(
        "run", tmp_path / "run", "--data", demo_path, "--pretrain-epochs", "1", "--refine-epochs", "1",
        *TINY_RUN, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    epochs = [line for line in proc.stderr.splitlines() if "epoch" in line and "loss" in line]
    assert [line.split()[0] for line in epochs] == ["pretrain", "refine"]
    assert all("valid ndcg@20" in line and line.endswith("s") for line in epochs)
    assert any(line.startswith("evaluating test: done in") for line in proc.stderr.splitlines())
    assert json.loads(proc.stdout)["kept"] in ("pretrain", "refine")


def test_quiet_prints_no_progress_and_still_the_result(partitioned_run, tmp_path):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    result = invoke_ok("-q", "pretrain", run_dir, "--dim", "4", "--epochs", "2", *TRAIN_OPTS)
    assert result.stderr == ""
    assert "best_epoch" in result.stdout
    loud = invoke_ok("pretrain", run_dir, "--dim", "4", "--epochs", "2", *TRAIN_OPTS)
    assert "pretrain epoch 2" in loud.stderr  # the same command without -q reports


def test_quiet_still_prints_errors(tmp_path):
    result = invoke("-q", "prepare", tmp_path / "run", "--data", tmp_path / "missing")
    assert result.exit_code == 1
    assert "does not exist" in only_line(result.stderr)


def test_verbose_is_accepted(partitioned_run, tmp_path):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    invoke_ok("-v", "pretrain", run_dir, "--dim", "4", "--epochs", "1", *TRAIN_OPTS)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("options", "flag", "code"),
    [
        (["--lr", "0"], "--lr", 1),  # in the parser's range, refused by the engine's check
        (["--batch-size", "0"], "--batch-size", 2),  # out of the parser's range
        (["--negatives", "0"], "--negatives", 2),
    ],
)
def test_an_error_is_one_stderr_line_naming_the_flag(partitioned_run, tmp_path, options, flag, code):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    result = invoke("pretrain", run_dir, "--dim", "4", "--epochs", "1", *TRAIN_OPTS, *options)
    assert result.exit_code == code
    line = only_line(result.stderr)
    assert line.startswith(f"error: {flag} ") if code == 1 else flag in line


def test_run_names_its_own_epoch_flags(tmp_path):
    proc = legcf("run", tmp_path / "run", "--refine-epochs", "0")
    assert proc.returncode == 2
    assert "--refine-epochs" in only_line(proc.stderr)
    assert not (tmp_path / "run").exists()  # refused while parsing, before any stage ran


def test_a_usage_error_is_one_line_too():
    proc = legcf("prepare")
    assert proc.returncode == 2
    line = only_line(proc.stderr)
    assert line.startswith("error: ") and "legcf prepare --help" in line


def test_every_config_field_has_a_flag():
    classes = (config.PrepareConfig, config.PartitionConfig, config.TrainConfig, config.PretrainConfig)
    names = {f.name for cls in (*classes, config.RefineConfig) for f in dataclasses.fields(cls)}
    assert names - {"train"} <= set(FLAG_NAMES)


def test_config_errors_read_as_flags():
    assert user_message(ConfigError("update_every", "must be >= 1, got 0"), "refine") == (
        "--update-every must be >= 1, got 0"
    )
    assert (
        user_message(ConfigError("codebook_size", "c=9 exceeds N=5"), "run")
        == "--codebook-size c=9 exceeds N=5"
    )
    assert user_message(ConfigError("no field here"), "run") == "no field here"
    assert user_message(DataError("train.txt:2: 'x' is not an integer"), None).startswith("train.txt:2")


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, demo_path):
    command = [
        sys.executable, "-m", "legcf_cli", "run", str(tmp_path / "run"), "--data", str(demo_path),
        "--pretrain-epochs", "500", "--patience", "500", *TINY_RUN,
    ]  # fmt: skip
    # A suite started in the background by a non-interactive shell inherits SIGINT ignored, and
    # so would the child: give it the default disposition, as a terminal's Ctrl-C would find.
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in proc.stderr:  # wait until training runs
            if line.startswith("pretrain epoch 1 "):
                break
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=180)  # generous: a loaded 2-core machine is slow to unwind
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert rest.splitlines()[-1].startswith("error: interrupted")
    assert "Traceback" not in rest
