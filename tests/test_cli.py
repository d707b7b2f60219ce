"""The CLI on bad input: exit code != 0, one ``error:`` line on stderr, no traceback,
and the files already in the run directory left exactly as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    CODEBOOK,
    TRAIN_OPTS,
    assert_clean_error,
    copy_run,
    invoke,
    read_manifest,
    snapshot,
    write_lightgcn,
)

TINY_TRAIN = ["--dim", "8", "--epochs", "1", "--batch-size", "4096", "--device", "cpu"]


@pytest.fixture
def prepared_copy(tmp_path, prepared_run) -> Path:
    return copy_run(prepared_run, tmp_path / "run")


@pytest.fixture
def partitioned_copy(tmp_path, partitioned_run) -> Path:
    return copy_run(partitioned_run, tmp_path / "run")


def bad_dataset(root: Path, train_lines: list[str], test_lines: list[str] | None = None) -> Path:
    write_lightgcn(root / "train.txt", train_lines)
    write_lightgcn(root / "test.txt", test_lines if test_lines is not None else ["0 7"])
    return root


def check_unchanged_after(run_dir: Path, *args, needles=()) -> str:
    before = snapshot(run_dir)
    assert before, "the run directory should hold files before the failing command"
    line = assert_clean_error(invoke(*args), *needles)
    assert snapshot(run_dir) == before
    return line


# ------------------------------------------------------------------ prepare


def test_missing_dataset_path(tmp_path, prepared_copy):
    missing = tmp_path / "no_such_dataset"
    check_unchanged_after(
        prepared_copy, "prepare", prepared_copy, "--data", missing, needles=[str(missing), "does not exist"]
    )


def test_missing_dataset_into_a_new_directory_writes_nothing(tmp_path):
    run_dir = tmp_path / "fresh"
    assert_clean_error(invoke("prepare", run_dir, "--data", tmp_path / "nope"), "does not exist")
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_ragged_row(tmp_path, prepared_copy):
    """Ids are tokens now (issue #13), so '-2' or 'abc' are ids; a row with a field too many
    is still refused, naming its line, and leaves the run as it was."""
    csv = tmp_path / "data.csv"
    csv.write_text("user,item\n1,2\n3,4,5\n")
    check_unchanged_after(
        prepared_copy, "prepare", prepared_copy, "--data", csv, needles=["data.csv:3", "expected 2 fields"]
    )


def test_malformed_csv(tmp_path, prepared_copy):
    csv = tmp_path / "data.csv"
    csv.write_text("user,item\n1,2\n3,\n")
    check_unchanged_after(
        prepared_copy, "prepare", prepared_copy, "--data", csv, needles=["data.csv:3", "item id", "empty"]
    )


def test_empty_dataset(tmp_path, prepared_copy):
    data = tmp_path / "empty"
    data.mkdir()
    (data / "train.txt").write_text("")
    (data / "test.txt").write_text("")
    check_unchanged_after(
        prepared_copy, "prepare", prepared_copy, "--data", data, needles=["no training interactions"]
    )


def test_dataset_directory_without_test_file(tmp_path, prepared_copy):
    data = tmp_path / "half"
    write_lightgcn(data / "train.txt", ["0 1 2"])
    check_unchanged_after(prepared_copy, "prepare", prepared_copy, "--data", data, needles=["test"])


def test_non_utf8_dataset(tmp_path, prepared_copy):
    data = tmp_path / "binary"
    data.mkdir()
    (data / "train.txt").write_bytes(b"0 1 2\n1 \xff\xfe 3\n")
    (data / "test.txt").write_text("0 3\n")
    check_unchanged_after(prepared_copy, "prepare", prepared_copy, "--data", data)


def test_run_directory_is_a_file(tmp_path, demo_path):
    not_a_dir = tmp_path / "a_file"
    not_a_dir.write_text("keep me\n")
    assert_clean_error(invoke("prepare", not_a_dir, "--data", demo_path))
    assert not_a_dir.read_text() == "keep me\n"


# ------------------------------------------------------- stages and inputs


def test_stage_before_its_inputs_exist(prepared_copy):
    check_unchanged_after(
        prepared_copy, "pretrain", prepared_copy, *TINY_TRAIN, needles=["'partition'", "legcf partition"]
    )


@pytest.mark.parametrize(
    ("command", "needle"),
    [("partition", "no manifest.json"), ("pretrain", "no manifest.json"), ("evaluate", "no manifest.json")],
)
def test_stage_on_a_directory_that_is_not_a_run(tmp_path, command, needle):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "unrelated.txt").write_text("x")
    check_unchanged_after(empty, command, empty, needles=[needle])


def test_refine_and_evaluate_before_pretrain(partitioned_copy):
    check_unchanged_after(partitioned_copy, "refine", partitioned_copy, *TINY_TRAIN[2:], needles=["pretrain"])
    check_unchanged_after(partitioned_copy, "evaluate", partitioned_copy, needles=["pretrain"])
    check_unchanged_after(partitioned_copy, "export", partitioned_copy, needles=["pretrain"])


def test_artifact_copied_from_another_dataset(tmp_path, partitioned_copy, small_dataset):
    other = tmp_path / "other"
    assert invoke("prepare", other, "--data", small_dataset).exit_code == 0
    assert invoke("partition", other, "-c", 4).exit_code == 0
    for name in ("data.safetensors", "assignment_init.safetensors"):
        target = copy_run(partitioned_copy, tmp_path / f"victim_{name}")
        (target / name).write_bytes((other / name).read_bytes())
        check_unchanged_after(target, "pretrain", target, *TINY_TRAIN, needles=[name])


def test_manifest_of_another_format_version(partitioned_copy):
    manifest = read_manifest(partitioned_copy)
    manifest["format_version"] = 2
    (partitioned_copy / "manifest.json").write_text(json.dumps(manifest))
    for args in (["pretrain", partitioned_copy, *TINY_TRAIN], ["partition", partitioned_copy]):
        check_unchanged_after(partitioned_copy, *args, needles=["format version 2"])


def test_corrupt_manifest(partitioned_copy):
    (partitioned_copy / "manifest.json").write_text("{not json")
    check_unchanged_after(
        partitioned_copy, "pretrain", partitioned_copy, *TINY_TRAIN, needles=["not valid JSON"]
    )


# --------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (["-c", "100000"], ["c=100000", "exceeds the number of entities"]),
        (["-c", "5", "-t", "6"], ["--per-entity", "t=6", "exceeds codebook size c=5"]),
        (["-c", "5", "-t", "0"], ["--per-entity", "greater than or equal to 1"]),
        (["-c", "0"], ["--codebook-size", "greater than or equal to 1"]),
        (["--anchor-weight", "0"], ["--anchor-weight", "w* must lie in"]),
        (["--init", "kmeans"], ["kmeans"]),
        (["--others", "nearest"], ["--others", "nearest"]),
    ],
    ids=["c>N", "t>c", "t<1", "c<1", "w*=0", "init", "others"],
)
def test_bad_partition_options(prepared_copy, options, needles):
    check_unchanged_after(prepared_copy, "partition", prepared_copy, *options, needles=needles)


def test_bad_options_do_not_touch_an_existing_partition(partitioned_copy):
    check_unchanged_after(
        partitioned_copy, "partition", partitioned_copy, "-c", "5", "-t", "9", needles=["t=9"]
    )


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--dim", "0"], "--dim"),
        (["--layers", "-1"], "--layers"),
        (["--lr", "0"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--l2", "-1"], "--l2"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_bad_training_options(partitioned_copy, options, needle):
    check_unchanged_after(
        partitioned_copy, "pretrain", partitioned_copy, *TINY_TRAIN, *options, needles=[needle]
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["pretrain", "refine", "evaluate"])
def test_cuda_without_cuda(partitioned_copy, command):
    check_unchanged_after(partitioned_copy, command, partitioned_copy, "--device", "cuda", needles=["cuda"])


def test_unknown_device(partitioned_copy):
    check_unchanged_after(partitioned_copy, "pretrain", partitioned_copy, "--device", "tpu", needles=["tpu"])


def test_bad_evaluate_options(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path / "run")
    check_unchanged_after(run_dir, "evaluate", run_dir, "--k", "0", needles=["K must be >= 1"])
    check_unchanged_after(run_dir, "evaluate", run_dir, "--k", "ten", needles=["--k"])
    check_unchanged_after(run_dir, "evaluate", run_dir, "--split", "train", needles=["split"])
    check_unchanged_after(run_dir, "evaluate", run_dir, "--model", "best", needles=["--model"])


def test_inspect_bad_paths(tmp_path, trained_run):
    assert_clean_error(invoke("inspect", tmp_path / "nothing"), "does not exist")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x01\x02")
    assert_clean_error(invoke("inspect", junk), "not a readable safetensors")
    # A run's pretrain file is a legcf file, but not an exported model.
    assert_clean_error(invoke("inspect", trained_run / "pretrain.safetensors"), "expected a 'export'")


def test_cli_subprocess_prints_no_traceback(tmp_path):
    """The installed entry point, outside CliRunner: one error line, exit 1."""
    data = tmp_path / "bad.csv"
    data.write_text("user,item,rating\n0,1,5\n1,5,x\n")
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "legcf_cli",
            "prepare",
            str(tmp_path / "run"),
            "--data",
            str(data),
            "--min-rating",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.csv:3" in errors[0] and "'x' is not a number" in errors[0]


def test_positive_control_same_copy_and_options_succeed(partitioned_copy):
    """The failures above come from the bad input: the same copy with good options trains."""
    result = invoke("pretrain", partitioned_copy, "--dim", "4", "--epochs", "1", *TRAIN_OPTS)
    assert result.exit_code == 0, result.stderr
    assert (partitioned_copy / "pretrain.safetensors").is_file()
    assert read_manifest(partitioned_copy)["stages"]["pretrain"]["config"]["dim"] == 4
    assert read_manifest(partitioned_copy)["stages"]["partition"]["config"]["codebook_size"] == CODEBOOK


def test_export_onto_a_directory(tmp_path, trained_run):
    run_dir = copy_run(trained_run, tmp_path / "run")
    target = tmp_path / "existing_dir"
    target.mkdir()
    check_unchanged_after(run_dir, "export", run_dir, "-o", target)


def test_manifest_that_is_not_an_object(partitioned_copy):
    (partitioned_copy / "manifest.json").write_text("[]")
    check_unchanged_after(partitioned_copy, "pretrain", partitioned_copy, *TINY_TRAIN, needles=["manifest"])


def test_nan_learning_rate(partitioned_copy):
    check_unchanged_after(partitioned_copy, "pretrain", partitioned_copy, *TINY_TRAIN, "--lr", "nan")


def test_error_is_the_only_line_on_stderr(tmp_path, prepared_copy):
    data = tmp_path / "bad.csv"
    data.write_text("user,item\n0,1\n1\n")
    result = invoke("prepare", prepared_copy, "--data", data)
    line = assert_clean_error(result, "bad.csv:3", "got 1")
    assert [text for text in result.stderr.splitlines() if text.strip()] == [line]
