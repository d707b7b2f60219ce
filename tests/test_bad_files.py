"""Valid safetensors with bad contents: every tensor file is checked before any array is
used, and a bad one gets one error line naming the file and what is wrong.

Each case changes one array or header field of a real file (an export, or a run's file
with its manifest checksum updated), as the adversarial pass of issue #11 did.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from helpers import assert_clean_error, copy_run, invoke, invoke_ok, rewrite_tensors, tensor_file

import legcf_core
from legcf_core.errors import ArtifactError
from legcf_core.packing import read_uints

Change = Callable[[dict, dict], None]


def _set(name: str, index, value) -> Change:
    def change(tensors: dict, meta: dict) -> None:
        array = tensors[name].copy()
        array[index] = value
        tensors[name] = array

    return change


def _replace(name: str, make) -> Change:
    def change(tensors: dict, meta: dict) -> None:
        tensors[name] = make(tensors[name])

    return change


def _uints(name: str, make) -> Change:
    """Change an integer array of an export, stored plain or bit-packed; written back plain int64
    (which the reader also takes), so the damage is in the values, not the packing."""

    def change(tensors: dict, meta: dict) -> None:
        values = read_uints(tensors, name, (None,) * _ndim(tensors, name))
        tensors.pop(f"{name}.packed", None), tensors.pop(f"{name}.layout", None)
        tensors[name] = make(values.copy())

    return change


def _ndim(tensors: dict, name: str) -> int:
    return tensors[name].ndim if name in tensors else tensors[f"{name}.layout"].size - 1


def _at(index, value):
    def make(array: np.ndarray) -> np.ndarray:
        array[index] = value
        return array

    return make


def _add(name: str, value: np.ndarray) -> Change:
    return lambda tensors, meta: tensors.update({name: value})


def _drop(name: str) -> Change:
    return lambda tensors, meta: tensors.pop(name)


def _header(key: str, value: str | None) -> Change:
    def change(tensors: dict, meta: dict) -> None:
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value

    return change


# (id, change, words the error line must hold)
EXPORT_CASES = [
    ("counts-1e9", _uints("assignment.counts", _at(1, 10**9)), ["assignment.counts"]),
    ("counts-negative", _uints("assignment.counts", _at(0, -1)), ["assignment.counts"]),
    ("counts-short", _uints("assignment.counts", lambda a: a[:-1]), ["assignment.counts", "shape"]),
    ("index-out-of-range", _uints("assignment.indices", _at(0, 10**6)), ["assignment.indices"]),
    ("index-negative", _uints("assignment.indices", _at(0, -1)), ["assignment.indices"]),
    ("packed-float", _replace("assignment.indices.packed", lambda a: a.astype(np.float32)), ["uint8"]),
    ("packed-layout-lies", _set("assignment.indices.layout", 0, 30), ["assignment.indices.packed"]),
    ("packed-layout-huge", _set("assignment.indices.layout", 1, 2**62), ["assignment.indices.packed"]),
    ("packed-no-layout", _drop("assignment.indices.layout"), ["assignment.indices.layout"]),
    ("negative-shape", _set("assignment.shape", 0, -1), ["assignment.shape"]),
    ("shape-3-values", _replace("assignment.shape", lambda a: np.r_[a, 1]), ["assignment.shape"]),
    ("data-short", _replace("assignment.data", lambda a: a[:-1]), ["assignment.data"]),
    ("data-nan", _set("assignment.data", 0, np.nan), ["assignment.data", "NaN"]),
    ("missing-codebook", _drop("codebook"), ["codebook", "missing"]),
    ("missing-indices", _drop("assignment.indices.packed"), ["assignment.indices", "missing"]),
    ("missing-train", _drop("train.counts.packed"), ["train.counts", "missing"]),
    ("codebook-float64", _replace("codebook", lambda a: a.astype(np.float64)), ["codebook", "float64"]),
    ("codebook-width", _replace("codebook", lambda a: a[:, :-1]), ["codebook", "shape"]),
    ("codebook-1d", _replace("codebook", lambda a: a.ravel()), ["codebook", "shape"]),
    ("codebook-nan", _set("codebook", (0, 0), np.inf), ["codebook"]),
    ("indices-float", _uints("assignment.indices", lambda a: a.astype(np.float32)), ["float32"]),
    ("user-ids-short", _uints("user_ids", lambda a: a[:-1]), ["user_ids"]),
    ("user-ids-unsorted", _uints("user_ids", lambda a: a[::-1].copy()), ["user_ids"]),
    ("train-shape", _set("train.shape", 1, 3), ["train"]),
    ("foreign-backbone-weight", _add("backbone.w1.0", np.zeros((2, 2), np.float32)), ["backbone.w1.0"]),
    ("dim-not-int", _header("dim", "16.0"), ["'dim'", "not an integer"]),
    ("dim-missing", _header("dim", None), ["'dim'", "missing"]),
    ("dim-huge", _header("dim", str(10**12)), ["'dim'"]),
    ("layers-huge", _header("layers", str(10**9)), ["'layers'"]),
    ("seed-negative", _header("seed", "-1"), ["'seed'"]),
    ("n-users-too-large", _header("n_users", str(10**6)), ["train"]),
    ("n-users-zero", _header("n_users", "0"), ["'n_users'"]),
    ("per-entity-0", _header("per_entity", "0"), ["'per_entity'"]),
    ("codebook-size-wrong", _header("codebook_size", "7"), ["'codebook_size'"]),
    ("embedding-unknown", _header("embedding", "wavelet"), ["wavelet"]),
    ("backbone-unknown", _header("backbone", "gat"), ["gat"]),
    ("made-by-missing", _header("made_by", None), ["'made_by'"]),
]


@pytest.mark.parametrize(
    ("change", "needles"), [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES]
)
def test_damaged_export_is_one_error_line(tmp_path, exported_model, change, needles):
    tensors, meta = tensor_file(exported_model)
    change(tensors, meta)
    bad = rewrite_tensors(tmp_path / "model.safetensors", tensors, meta)
    line = assert_clean_error(invoke("inspect", bad), str(bad), *needles)
    assert "malformed" in line or "unknown" in line
    with pytest.raises(ArtifactError, match="model.safetensors"):
        legcf_core.load(bad)


def test_the_untouched_export_still_loads(tmp_path, exported_model):
    tensors, meta = tensor_file(exported_model)
    good = rewrite_tensors(tmp_path / "model.safetensors", tensors, meta)
    assert good.read_bytes() == exported_model.read_bytes()
    invoke_ok("inspect", good)


RUN_CASES = [
    # (id, file, change, command, needles)
    ("refine-indptr", "refine.safetensors", _set("assignment.indptr", 1, 10**9), ["evaluate"], ["refine"]),
    ("refine-kept", "refine.safetensors", _header("kept", "best"), ["evaluate"], ["'kept'"]),
    ("pretrain-codebook-rows", "pretrain.safetensors", _replace("codebook", lambda a: a[:-1]),
     ["evaluate", "--model", "pretrain"], ["pretrain"]),
    ("data-index", "data.safetensors", _set("train.indices", 0, 10**6), ["evaluate"], ["train.indices"]),
    ("data-ids", "data.safetensors", _drop("item_ids"), ["inspect"], ["item_ids"]),
    ("data-n-items", "data.safetensors", _header("n_items", "x"), ["pretrain"], ["'n_items'"]),
    ("partition-data", "assignment_init.safetensors", _replace("assignment.data", lambda a: a[:3]),
     ["pretrain"], ["assignment.data"]),
    ("partition-parts", "assignment_init.safetensors", _set("parts", 0, 10**6),
     ["inspect", "--model", "pretrain"], ["parts"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "change", "command", "needles"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES]
)
def test_damaged_run_file_is_one_error_line(tmp_path, trained_run, name, change, command, needles):
    run_dir = copy_run(trained_run, tmp_path / "run")
    tensors, meta = tensor_file(run_dir / name)
    change(tensors, meta)
    rewrite_tensors(run_dir / name, tensors, meta)
    extra = ["--epochs", "1", "--dim", "8", "--device", "cpu"] if command == ["pretrain"] else []
    line = assert_clean_error(invoke(command[0], run_dir, *command[1:], *extra), name, *needles)
    assert "rerun 'legcf" in line


def test_reported_crashes_are_one_line_in_a_subprocess(tmp_path, exported_model, trained_run):
    """The two crashes of issue #11, outside pytest's process: a segfault and a glibc abort."""
    import subprocess
    import sys

    tensors, meta = tensor_file(exported_model)
    _uints("assignment.counts", _at(1, 10**9))(tensors, meta)
    bad = rewrite_tensors(tmp_path / "model.safetensors", tensors, meta)
    run_dir = copy_run(trained_run, tmp_path / "run")
    tensors, meta = tensor_file(run_dir / "refine.safetensors")
    tensors["assignment.indptr"] = tensors["assignment.indptr"].copy()
    tensors["assignment.indptr"][1] = 10**9
    rewrite_tensors(run_dir / "refine.safetensors", tensors, meta)
    for args in (["inspect", bad], ["evaluate", run_dir, "--device", "cpu"]):
        done = subprocess.run(
            [sys.executable, "-m", "legcf_cli", *map(str, args)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 1, (done.returncode, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and "malformed" in lines[0], done.stderr


def test_backbone_weight_shapes_are_what_they_build():
    """A model file's backbone weights are checked against ``weight_shapes`` before any backbone
    is built, so the shapes it declares must be the ones each backbone really holds."""
    from legcf_core.registry import BACKBONES, backbone_type

    for name in BACKBONES:
        kind = backbone_type(name)
        built = {k: tuple(v.shape) for k, v in kind(4, 2, 0).state_dict().items()}
        assert kind.weight_shapes(4, 2) == built, name


def _widened(tensors: dict) -> dict:
    """An export's arrays in format version 1's layout: int64 indptr, int32 indices, int64 ids."""
    wide = {k: v for k, v in tensors.items() if k.split(".")[-1] not in ("packed", "layout", "counts")}
    for prefix in ("assignment", "train"):
        counts = read_uints(tensors, f"{prefix}.counts", (None,))
        wide[f"{prefix}.indptr"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        wide[f"{prefix}.indices"] = read_uints(tensors, f"{prefix}.indices", (None,)).astype(np.int32)
    for name in ("user_ids", "item_ids"):
        wide[name] = read_uints(tensors, name, (None,))
    return wide


def test_a_version_1_export_still_serves_the_same_and_a_newer_one_is_refused(tmp_path, exported_model):
    tensors, meta = tensor_file(exported_model)
    assert meta["format_version"] == "2" and "assignment.indices.packed" in tensors
    old = rewrite_tensors(tmp_path / "v1.safetensors", _widened(tensors), {**meta, "format_version": "1"})
    assert old.stat().st_size > exported_model.stat().st_size
    now, then = legcf_core.load(exported_model), legcf_core.load(old)
    users = now.user_ids
    np.testing.assert_array_equal(now.recommend(users, k=10)[0], then.recommend(users, k=10)[0])
    newer = rewrite_tensors(tmp_path / "v3.safetensors", tensors, {**meta, "format_version": "3"})
    assert_clean_error(
        invoke("recommend", newer, "--user", str(users[0])), "format version 3", "versions 1 to 2"
    )
