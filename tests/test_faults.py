"""Faults around the run directory: a stage killed at chosen moments, two stages at once.

The kill test runs the real CLI in a child process and SIGKILLs it: after a
delay, or at the k-th fsync of a file (the moment inside an atomic write when
the temporary file holds every byte and is not yet renamed). The second kind
wraps ``os.fsync`` in the child only, as a fault injector (the concurrency test
uses it to pause a stage inside its write); the engine has no test hook. After
every kill the directory must hold only whole files, and a rerun must end with
the same artifacts as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_clean_error, copy_run, invoke, invoke_ok, read_manifest

from legcf_core import artifacts as art
from legcf_core.manifest import check_manifest

RUN_ARGS = [
    "-c", "10", "--dim", "8", "--layers", "1", "--pretrain-epochs", "2", "--refine-epochs", "1",
    "--batch-size", "4096", "--seed", "5", "--device", "cpu",
]  # fmt: skip

# The child: the real CLI, with os.fsync on regular files counted; at the LEGCF_KILL_AT-th
# the process is SIGKILLed, at the LEGCF_PAUSE_AT-th it waits (inside the stage, lock held)
# until the file LEGCF_GO exists, after creating LEGCF_GO + ".paused".
CHILD = """
import os, signal, stat, sys, time
kill_at = int(os.environ.get("LEGCF_KILL_AT", "0"))
pause_at = int(os.environ.get("LEGCF_PAUSE_AT", "0"))
seen = [0]
real_fsync = os.fsync
def fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode):
        seen[0] += 1
        if seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if seen[0] == pause_at:
            go = os.environ["LEGCF_GO"]
            open(go + ".paused", "w").close()
            deadline = time.time() + 120
            while not os.path.exists(go) and time.time() < deadline:
                time.sleep(0.02)
    return real_fsync(fd)
os.fsync = fsync
from legcf_cli.app import main
sys.argv = ["legcf", *sys.argv[1:]]
main()
"""


def legcf_child(*args, kill_at: int = 0, pause_at: int = 0, go: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "LEGCF_KILL_AT": str(kill_at), "LEGCF_PAUSE_AT": str(pause_at), "LEGCF_GO": str(go)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def digests(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.glob("*.safetensors"))}


def assert_whole(run_dir: Path) -> None:
    """Only whole files: every tensor file reads back, the manifest (if any) meets its schema
    and its checksums match the files they name."""
    for path in run_dir.glob("*.safetensors"):
        art.read_tensors(path)
    if (run_dir / "manifest.json").exists():
        manifest = read_manifest(run_dir)
        check_manifest(manifest)
        for entry in manifest["stages"].values():
            for name, digest in entry["outputs"].items():
                assert art.sha256_file(run_dir / name) == digest, name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_path) -> dict[str, str]:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    invoke_ok("run", run_dir, "--data", demo_path, *RUN_ARGS)
    return digests(run_dir)


def test_killed_runs_resume_to_the_same_artifacts(tmp_path, demo_path, uninterrupted):
    """SIGKILL inside the data file's write, inside pretrain's tensor write, inside refine's
    manifest write, then SIGKILL and SIGINT after a delay, each on the directory the last one
    left; then rerun."""
    run_dir = tmp_path / "run"
    for kill_at in (1, 5, 8):  # fsync of data.safetensors, pretrain.safetensors, refine's manifest
        child = legcf_child("run", run_dir, "--data", demo_path, *RUN_ARGS, kill_at=kill_at)
        child.communicate(timeout=300)
        assert child.returncode == -signal.SIGKILL, child.returncode
        assert list(run_dir.glob(".*.tmp")), "the kill should land inside a write"
        assert_whole(run_dir)
    for sig in (signal.SIGKILL, signal.SIGINT):  # after a delay, somewhere in the stages
        child = legcf_child("run", run_dir, "--data", demo_path, *RUN_ARGS)
        time.sleep(3.0)
        child.send_signal(sig)
        child.communicate(timeout=60)
        assert_whole(run_dir)
    invoke_ok("run", run_dir, "--data", demo_path, *RUN_ARGS)
    assert not list(run_dir.glob(".*.tmp")), "the rerun should remove what the killed writers left"
    assert not (run_dir / art.LOCK_FILE).exists()
    assert digests(run_dir) == uninterrupted
    assert_whole(run_dir)


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run directory's lock, as a stage does, until killed."""
    code = (
        "import sys, time\n"
        "from legcf_core.artifacts import RunDir\n"
        "with RunDir(sys.argv[1]).writing('pretrain'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_writer_fails_at_once_naming_the_holder(tmp_path, trained_run, demo_path):
    run_dir = copy_run(trained_run, tmp_path / "run")
    manifest = (run_dir / "manifest.json").read_bytes()
    holder = _hold_lock(run_dir)
    try:
        for args in (
            ["evaluate", run_dir],
            ["export", run_dir],
            ["partition", run_dir, "-c", "5"],
            ["prepare", run_dir, "--data", demo_path],
            ["refine", run_dir, "--epochs", "1", "--device", "cpu"],
        ):
            started = time.perf_counter()
            line = assert_clean_error(invoke(*args), "in use", f"pid {holder.pid}", "legcf pretrain")
            assert time.perf_counter() - started < 10, "fails at once, without waiting"
            assert str(run_dir) in line
        assert (run_dir / "manifest.json").read_bytes() == manifest
        invoke_ok("inspect", run_dir)  # reading takes no lock
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / art.LOCK_FILE).exists()  # left by the killed holder, and harmless:
    invoke_ok("evaluate", run_dir)
    assert not (run_dir / art.LOCK_FILE).exists()


def test_two_stages_at_once_leave_a_consistent_manifest(tmp_path, trained_run):
    """Two real stages on one directory: while pretrain is inside its tensor write, evaluate
    fails with the lock line; pretrain then finishes, and every checksum and evaluation entry
    in the manifest holds."""
    run_dir = copy_run(trained_run, tmp_path / "run")
    invoke_ok("evaluate", run_dir, "--model", "refine")
    go = tmp_path / "go"
    first = legcf_child(
        "pretrain", run_dir, "--dim", "8", "--layers", "1", "--epochs", "1",
        "--batch-size", "4096", "--device", "cpu", "--seed", "3", pause_at=1, go=go,
    )  # fmt: skip
    deadline = time.time() + 120
    while not Path(f"{go}.paused").exists() and time.time() < deadline:
        time.sleep(0.02)
    second = legcf_child("evaluate", run_dir, "--model", "refine")
    _, err = second.communicate(timeout=120)
    go.touch()
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and f"pid {first.pid}" in lines[0], err
    assert "legcf pretrain" in lines[0]
    assert_whole(run_dir)
    assert read_manifest(run_dir)["stages"]["pretrain"]["config"]["epochs"] == 1
    invoke_ok("evaluate", run_dir, "--model", "pretrain")
    results = read_manifest(run_dir)["stages"]["evaluate"]["results"]
    assert {"pretrain/test", "refine/test"} <= set(results)  # no entry dropped


def test_a_failed_first_prepare_leaves_no_directory(tmp_path):
    fresh = tmp_path / "fresh"
    data = tmp_path / "one.csv"
    data.write_text("0,1\n0,2\n")
    assert_clean_error(invoke("run", fresh, "--data", data, "--device", "cpu"), "empty test split")
    assert not fresh.exists()
