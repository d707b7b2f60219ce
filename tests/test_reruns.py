"""Reruns: the same seed gives byte-identical artifacts; another seed does not."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from helpers import invoke_ok, read_manifest

TENSOR_FILES = (
    "data.safetensors",
    "assignment_init.safetensors",
    "pretrain.safetensors",
    "refine.safetensors",
    "model.safetensors",
)


def legcf_run(run_dir, demo_path, seed: int) -> dict:
    result = invoke_ok(
        "run", run_dir, "--data", demo_path, "--seed", seed,
        "-c", 30, "-t", 2, "--dim", 16, "--layers", 2,
        "--pretrain-epochs", 2, "--refine-epochs", 2, "--batch-size", 4096, "--lr", 0.02,
        "--device", "cpu", "--json",
    )  # fmt: skip
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, demo_path):
    root = tmp_path_factory.mktemp("reruns")
    summaries = {
        name: legcf_run(root / name, demo_path, seed) for name, seed in (("a", 11), ("b", 11), ("c", 12))
    }
    return root, summaries


def split_file(path: Path) -> tuple[dict, bytes]:
    """A safetensors file as (parsed JSON header, tensor bytes)."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def test_same_seed_gives_byte_identical_artifacts(three_runs):
    root, _ = three_runs
    for name in TENSOR_FILES:
        a, b = (root / "a" / name).read_bytes(), (root / "b" / name).read_bytes()
        assert len(a) > 100
        assert a == b, f"{name} differs between two runs with the same seed"


def test_same_seed_gives_identical_tensors_and_headers(three_runs):
    """What the byte comparison should see, up to the order of the header's metadata keys."""
    root, summaries = three_runs
    for name in TENSOR_FILES:
        (head_a, data_a), (head_b, data_b) = split_file(root / "a" / name), split_file(root / "b" / name)
        assert len(data_a) > 100
        assert head_a == head_b, name
        assert data_a == data_b, f"{name}: tensor bytes differ between two runs with the same seed"
    drop = {"seconds"}
    assert {k: v for k, v in summaries["a"].items() if k not in drop} == {
        k: v for k, v in summaries["b"].items() if k not in drop
    }
    history = [read_manifest(root / n)["stages"]["refine"]["history"] for n in "ab"]
    assert [e["loss"] for e in history[0]] == [e["loss"] for e in history[1]]


def test_another_seed_gives_other_artifacts(three_runs):
    root, _ = three_runs
    for name in ("data.safetensors", "assignment_init.safetensors", "pretrain.safetensors"):
        assert (root / "a" / name).read_bytes() != (root / "c" / name).read_bytes(), name


def test_run_json_summary(three_runs):
    root, summaries = three_runs
    summary = summaries["a"]
    assert {"split", "users", "recall@20", "ndcg@20", "params", "kept", "model_file_bytes"} <= set(summary)
    assert summary["split"] == "test"
    assert summary["kept"] in ("pretrain", "refine")
    assert summary["model_file_bytes"] == (root / "a" / "model.safetensors").stat().st_size
    manifest = read_manifest(root / "a")
    assert {"prepare", "partition", "pretrain", "refine", "evaluate", "export"} <= set(manifest["stages"])
    assert summary["params"] == manifest["stages"]["export"]["metrics"]["params"]
