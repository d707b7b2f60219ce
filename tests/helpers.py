"""Helpers shared by the tests: tiny training settings, CLI invocation, dataset
writers and directory snapshots."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

from legcf_cli.app import app

# Small settings for the shared trained run (the whole suite must stay fast).
SEED = 7
DIM = 32
CODEBOOK = 50
PER_ENTITY = 2
LAYERS = 2
BATCH = 4096
LR = 0.02
PRETRAIN_EPOCHS = 4
REFINE_EPOCHS = 2

TRAIN_OPTS = ["--batch-size", str(BATCH), "--lr", str(LR), "--seed", str(SEED), "--device", "cpu"]


def invoke(*args: str | Path):
    """Run the CLI in-process; returns Click's Result (stdout and stderr kept apart)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def invoke_ok(*args: str | Path):
    result = invoke(*args)
    assert result.exit_code == 0, (
        f"legcf {' '.join(map(str, args))} failed ({result.exit_code}):\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\nexception: {result.exception!r}"
    )
    return result


def write_lightgcn(path: Path, rows: Mapping[int, Iterable[int]] | Iterable[str]) -> Path:
    """Write a LightGCN text file: ``user item item ...`` per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rows, Mapping):
        lines = [" ".join(str(v) for v in [user, *items]) for user, items in rows.items()]
    else:
        lines = list(rows)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pairs(path: Path, pairs: Iterable[tuple[int, int]], sep: str = ",", header: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [] if header is None else [header]
    lines += [f"{u}{sep}{i}" for u, i in pairs]
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes, to prove a failed command changed nothing."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file()
    }


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def read_manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


def assert_clean_error(result, *needles: str) -> str:
    """A user error: exit 1, one ``error:`` line on stderr naming the problem, no traceback.

    Returns the error line. ``needles`` must all appear in it (case-insensitive).
    """
    output = f"{result.stdout}\n{result.stderr}"
    assert result.exit_code != 0, f"expected failure, got exit 0; stdout: {result.stdout}"
    assert isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    )
    assert "Traceback" not in output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected one 'error:' line on stderr, got: {result.stderr!r}"
    assert lines[-1] == errors[0], f"the error line should end stderr: {result.stderr!r}"
    assert "error:" not in result.stdout
    line = errors[0]
    assert len(line) > len("error: ") + 10, f"error line says too little: {line!r}"
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


def operator_model(adjacency, n_users, assignment, codebook, per_entity, layers, device=None):
    """LEGCF's operator-path model over ``adjacency`` with S = ``assignment`` and E_meta = ``codebook``."""
    import torch

    from legcf_core.layers.codebook import CodebookLayer, OperatorModel

    layer = CodebookLayer(codebook, assignment, per_entity)
    return OperatorModel(layer, adjacency, n_users, layers, device or torch.device("cpu"))


def tensor_file(path: Path) -> tuple[dict, dict[str, str]]:
    """A safetensors file's arrays and metadata, read with the safetensors library itself."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata())  # noqa: SIM118


def rewrite_tensors(path: Path, tensors: Mapping, meta: Mapping[str, str]) -> Path:
    """Write ``tensors`` and ``meta`` to ``path`` as valid safetensors (bad contents, good
    format). If ``path`` is in a run directory, the manifest's checksums of it (as an output
    and as an input) follow, so a command meets the contents rather than a checksum."""
    from legcf_core.artifacts import serialize_tensors, sha256_file

    path.write_bytes(serialize_tensors(tensors, meta))
    manifest_path = path.parent / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest.get("stages", {}).values():
            for field in ("outputs", "inputs"):
                if path.name in entry.get(field, {}):
                    entry[field][path.name] = sha256_file(path)
        manifest_path.write_text(json.dumps(manifest))
    return path


# ---------------------------------------------------------------- a real server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(model: Path, timeout: float = 90):
    """``legcf serve MODEL`` as a real process on a free port of 127.0.0.1, answering ``/health``;
    yields an ``httpx.Client`` on it and stops the server afterwards."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "legcf_cli",
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"legcf serve exited with {proc.returncode}: {proc.stderr.read()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"legcf serve did not answer /health within {timeout} s")
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
