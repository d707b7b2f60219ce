"""The run directory: atomic writes, safetensors headers, refusal of foreign or
out-of-date artifacts, and no pickle anywhere."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import CODEBOOK, copy_run, invoke_ok, read_manifest, snapshot
from safetensors.numpy import save_file

import legcf_cli
import legcf_core
from legcf_core import artifacts as art
from legcf_core import stages
from legcf_core.errors import ArtifactError
from legcf_core.training import TrainConfig

CPU = torch.device("cpu")
PRETRAIN = stages.PretrainConfig(dim=8, layers=1, train=TrainConfig(epochs=1, batch_size=4096, seed=1))
REFINE = stages.RefineConfig(train=TrainConfig(epochs=1, batch_size=4096, seed=1))

EXPECTED_KINDS = {
    art.DATA_FILE: "interactions",
    art.PARTITION_FILE: "assignment",
    art.PRETRAIN_FILE: "codebook",
    art.REFINE_FILE: "model",
}


def raw_header(path: Path) -> dict:
    """The safetensors header parsed by hand: 8-byte little-endian length, then JSON."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length])


def set_output_digest(run_dir: Path, stage: str, filename: str) -> None:
    """Make the manifest accept a swapped file, so the check behind the checksum is reached."""
    manifest = read_manifest(run_dir)
    manifest["stages"][stage]["outputs"][filename] = art.sha256_file(run_dir / filename)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def other_run(tmp_path_factory, small_dataset) -> Path:
    """A run on another dataset (prepared and partitioned)."""
    run_dir = tmp_path_factory.mktemp("other") / "run"
    invoke_ok("prepare", run_dir, "--data", small_dataset)
    invoke_ok("partition", run_dir, "-c", 4)
    return run_dir


# ------------------------------------------------------------ atomic I/O


def test_atomic_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    art.write_bytes_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"
    art.write_bytes_atomic(target, b"again")
    assert target.read_bytes() == b"again"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_failed_write_keeps_the_good_file(tmp_path):
    target = tmp_path / "file.bin"
    art.write_bytes_atomic(target, b"good")
    with pytest.raises(TypeError):
        art.write_bytes_atomic(target, "not bytes")  # fails inside the temporary file
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_failed_fsync_keeps_the_good_tensor_file(tmp_path, monkeypatch):
    target = tmp_path / "t.safetensors"
    art.write_tensors(target, {"x": np.arange(3.0)}, art.header("test"))
    before = target.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the OS fails, not the engine
    with pytest.raises(ArtifactError, match="No space left"):
        art.write_tensors(target, {"x": np.arange(5.0)}, art.header("test"))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]


def test_write_tensors_returns_the_file_digest(tmp_path):
    target = tmp_path / "t.safetensors"
    digest = art.write_tensors(target, {"x": np.arange(4, dtype=np.int64)}, art.header("test", a=1))
    assert digest == art.sha256_file(target)
    tensors, meta = art.read_tensors(target, kind="test")
    np.testing.assert_array_equal(tensors["x"], np.arange(4))
    assert meta["a"] == "1"


def test_write_tensors_is_byte_deterministic(tmp_path):
    tensors = {"x": np.arange(6, dtype=np.float32)}
    meta = art.header("codebook", dataset="abc", dim=8, layers=3, codebook_size=5, per_entity=2)
    blobs = set()
    for index in range(5):
        art.write_tensors(tmp_path / f"{index}.safetensors", tensors, meta)
        blobs.add((tmp_path / f"{index}.safetensors").read_bytes())
    assert len(blobs) == 1


def test_csr_round_trip():
    rng = np.random.default_rng(0)
    matrix = sp.random(7, 5, density=0.4, random_state=1, format="csr", dtype=np.float32)
    back = art.csr_from_arrays("m", art.csr_arrays("m", matrix))
    assert back.shape == matrix.shape and (back != matrix).nnz == 0
    binary = sp.csr_matrix((rng.random((4, 6)) < 0.5).astype(np.float32))
    back = art.csr_from_arrays("b", art.csr_arrays("b", binary, with_data=False))
    np.testing.assert_array_equal(back.toarray(), binary.toarray())
    with pytest.raises(ArtifactError, match="'b.shape' is missing"):
        art.csr_from_arrays("b", {})
    with pytest.raises(ArtifactError, match="'b.indices' is missing"):
        art.csr_from_arrays("b", {}, shape=(4, 6))
    for narrow in (False, True):
        back = art.csr_from_arrays("m", art.csr_arrays("m", matrix, narrow=narrow))
        assert back.shape == matrix.shape and (back != matrix).nnz == 0


# ---------------------------------------------------------------- headers


def test_every_tensor_file_has_a_legcf_header(trained_run, exported_model):
    fingerprint = read_manifest(trained_run)["dataset"]["fingerprint"]
    files = {**{trained_run / name: kind for name, kind in EXPECTED_KINDS.items()}, exported_model: "export"}
    for path, kind in files.items():
        meta = raw_header(path)["__metadata__"]
        assert meta["format"] == "legcf", path
        assert meta["format_version"] == str(art.format_version(kind)), path
        assert meta["format_version"] == ("2" if kind == "export" else "1"), path
        assert meta["kind"] == kind, path
        assert meta["dataset"] == fingerprint, path
        assert art.read_metadata(path) == meta


def test_foreign_and_broken_files_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": np.zeros(2)}, str(plain))
    with pytest.raises(ArtifactError, match="not a legcf artifact"):
        art.read_metadata(plain)
    newer = tmp_path / "newer.safetensors"
    save_file(
        {"x": np.zeros(2)}, str(newer), metadata={"format": "legcf", "format_version": "2", "kind": "x"}
    )
    with pytest.raises(ArtifactError, match="format version 2"):
        art.read_metadata(newer)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        art.read_metadata(garbage)
    with pytest.raises(ArtifactError, match="does not exist"):
        art.read_metadata(tmp_path / "missing.safetensors")
    good = tmp_path / "good.safetensors"
    art.write_tensors(good, {"x": np.zeros(2)}, art.header("codebook"))
    with pytest.raises(ArtifactError, match="expected a 'model'"):
        art.read_tensors(good, kind="model")


# ------------------------------------------------------ foreign artifacts


def test_stage_refuses_artifact_from_another_dataset(tmp_path, partitioned_run, other_run):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    (run_dir / art.PARTITION_FILE).write_bytes((other_run / art.PARTITION_FILE).read_bytes())
    # As copied, the checksum in the manifest already refuses the file ...
    with pytest.raises(ArtifactError, match="changed since 'partition' wrote it"):
        stages.pretrain(art.RunDir(run_dir), PRETRAIN, CPU)
    # ... and with the checksum made to match, the dataset fingerprint still does.
    set_output_digest(run_dir, "partition", art.PARTITION_FILE)
    before = snapshot(run_dir)
    with pytest.raises(ArtifactError, match="made from dataset") as info:
        stages.pretrain(art.RunDir(run_dir), PRETRAIN, CPU)
    assert str(run_dir / art.PARTITION_FILE) in str(info.value)
    assert snapshot(run_dir) == before


def test_stage_refuses_prepared_data_of_another_dataset(tmp_path, partitioned_run, other_run):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    (run_dir / art.DATA_FILE).write_bytes((other_run / art.DATA_FILE).read_bytes())
    set_output_digest(run_dir, "prepare", art.DATA_FILE)
    with pytest.raises(ArtifactError, match="made from dataset"):
        stages.partition(art.RunDir(run_dir), stages.PartitionConfig(codebook_size=CODEBOOK))


def test_stage_refuses_another_manifest_format_version(tmp_path, partitioned_run):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    manifest = read_manifest(run_dir)
    manifest["format_version"] = art.FORMAT_VERSION + 1
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 2"):
        stages.pretrain(art.RunDir(run_dir), PRETRAIN, CPU)
    with pytest.raises(ArtifactError, match="format version"):
        stages.load_data(art.RunDir(run_dir))


def test_stage_refuses_tensor_file_of_another_format_version(tmp_path, partitioned_run):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    path = run_dir / art.PARTITION_FILE
    tensors, meta = art.read_tensors(path)
    art.write_tensors(path, tensors, {**meta, "format_version": "99"})
    set_output_digest(run_dir, "partition", art.PARTITION_FILE)
    with pytest.raises(ArtifactError, match="format version 99"):
        stages.pretrain(art.RunDir(run_dir), PRETRAIN, CPU)


def test_missing_stage_and_missing_or_changed_outputs(tmp_path, partitioned_run):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    run = art.RunDir(run_dir)
    with pytest.raises(ArtifactError, match="no 'pretrain' results"):
        stages.refine(run, REFINE, CPU)
    blob = bytearray((run_dir / art.PARTITION_FILE).read_bytes())
    blob[-1] ^= 0xFF
    (run_dir / art.PARTITION_FILE).write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="changed since 'partition'"):
        stages.pretrain(run, PRETRAIN, CPU)
    (run_dir / art.PARTITION_FILE).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        stages.pretrain(run, PRETRAIN, CPU)
    with pytest.raises(ArtifactError, match="not a legcf run directory"):
        stages.load_data(art.RunDir(tmp_path / "empty"))


def test_stale_models_are_refused_after_inputs_change(tmp_path, trained_run):
    run_dir = copy_run(trained_run, tmp_path / "run")
    run = art.RunDir(run_dir)
    assert run.is_fresh("pretrain") and run.is_fresh("refine")
    # A new partition with another codebook size makes pretrain and refine out of date.
    stages.partition(run, stages.PartitionConfig(codebook_size=CODEBOOK + 5, seed=3))
    assert not run.is_fresh("pretrain") and not run.is_fresh("refine")
    with pytest.raises(ArtifactError, match="older than"):
        stages.evaluate_run(run)
    with pytest.raises(ArtifactError, match="older than"):
        stages.refine(run, REFINE, CPU)
    with pytest.raises(ArtifactError, match="older than"):
        stages.export(run)


# ---------------------------------------------------------------- pickle


def test_no_pickle_in_the_code():
    pattern = re.compile(r"\bpickle\b|torch\.(save|load)\b|allow_pickle\s*=\s*True|np\.(save|load)\b")
    roots = [Path(legcf_core.__file__).parent, Path(legcf_cli.__file__).parent]
    sources = [p for root in roots for p in root.rglob("*.py")]
    assert len(sources) > 10
    offenders = [str(p) for p in sources if pattern.search(p.read_text())]
    assert offenders == []


def test_run_directory_holds_only_json_and_safetensors(trained_run, exported_model):
    files = [p for p in trained_run.rglob("*") if p.is_file()] + [exported_model]
    names = {p.name for p in files}
    assert {"manifest.json", *EXPECTED_KINDS} <= names
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
            continue
        assert path.suffix == ".safetensors", path
        assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"
        header = raw_header(path)
        for name, info in header.items():
            if name != "__metadata__":
                assert info["dtype"] in {"F32", "F64", "I32", "I64", "U8", "U16"}, (path, name, info)
