"""Training in two processes launched by torchrun (gloo on 127.0.0.1), for real: the result
matches one process's, the manifest says so, and a killed rank fails the run with one
line, leaving the last complete files readable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    CODEBOOK,
    DIM,
    LAYERS,
    PER_ENTITY,
    PRETRAIN_EPOCHS,
    REFINE_EPOCHS,
    SEED,
    TRAIN_OPTS,
    assert_clean_error,
    copy_run,
    invoke,
    invoke_ok,
    read_manifest,
    tensor_file,
)

from legcf_core.artifacts import RunDir
from legcf_core.layers import LayerSize
from legcf_core.registry import layer_type
from legcf_core.stages.inputs import load_initial_assignment

# Two processes sum the slices' gradients in another order than one process sums the
# batch's; over a few Adam steps that moves parameters by float32 rounding only.
PARAMETER_TOLERANCE = 1e-3
METRIC_TOLERANCE = 1e-3


def torchrun(*args: str | Path, **kwargs) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node 2 legcf ARGS`` (torchrun as a module, legcf as one)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "legcf_cli", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, **kwargs)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def lightgcn_run(tmp_path_factory, partitioned_run) -> Path:
    """The shared trained run's stages on LightGCN's layer mean: what sharded training trains
    (``auto`` gives LEGCF mixed layers in one process, LightGCN under --shard)."""
    run_dir = copy_run(partitioned_run, tmp_path_factory.mktemp("lightgcn") / "run")
    on_lightgcn = {"pretrain": ("--backbone", "lightgcn"), "refine": ()}  # refine keeps pretrain's
    train_stages(run_dir, lambda *args: invoke_ok(*args, *on_lightgcn[args[0]]))
    return run_dir


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, demo_path) -> Path:
    """``legcf run`` with the shared trained run's settings, in two processes."""
    run_dir = tmp_path_factory.mktemp("torchrun") / "run"
    stderr = run_dir.parent / "stderr.txt"
    with open(stderr, "w") as err:
        process = torchrun(
            "run", run_dir, "--data", demo_path, "-c", CODEBOOK, "-t", PER_ENTITY, "--dim", DIM,
            "--layers", LAYERS, "--pretrain-epochs", PRETRAIN_EPOCHS, "--refine-epochs", REFINE_EPOCHS,
            *TRAIN_OPTS, "--json", stderr=err,
        )  # fmt: skip
        stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.read_text()[-3000:]
    assert json.loads(stdout)["kept"] in ("pretrain", "refine")  # rank 0 alone prints the result
    return run_dir


def test_two_processes_train_what_one_trains(two_process_run, trained_run):
    for name in ("pretrain.safetensors", "refine.safetensors"):
        two, _ = tensor_file(two_process_run / name)
        one, _ = tensor_file(trained_run / name)
        assert set(two) == set(one)
        for key, value in one.items():
            assert np.allclose(two[key], value, rtol=0, atol=PARAMETER_TOLERANCE), (name, key)
    one_stages, two_stages = read_manifest(trained_run)["stages"], read_manifest(two_process_run)["stages"]
    for stage in ("pretrain", "refine"):
        assert two_stages[stage]["metrics"]["ndcg@20"] == pytest.approx(
            one_stages[stage]["metrics"]["ndcg@20"], abs=METRIC_TOLERANCE
        )
        assert [h["loss"] for h in two_stages[stage]["history"]] == pytest.approx(
            [h["loss"] for h in one_stages[stage]["history"]], abs=1e-4
        )


def test_the_manifest_says_two_processes_trained(two_process_run, trained_run):
    stages = read_manifest(two_process_run)["stages"]
    nnz = read_manifest(trained_run)["stages"]["prepare"]["metrics"]["train"]
    for stage in ("pretrain", "refine"):
        entry = stages[stage]
        assert (entry["world_size"], entry["backend"]) == (2, "gloo")
        shares = entry["rank_positives"]
        assert len(shares) == 2 and sum(shares) == nnz * len(entry["history"])
        assert abs(shares[0] - shares[1]) <= len(entry["history"]) * 3  # one slice of each batch each
    single = read_manifest(trained_run)["stages"]["pretrain"]
    assert single["world_size"] == 1 and single["rank_positives"] == [nnz * len(single["history"])]


def test_other_commands_read_the_run_as_usual(two_process_run):
    result = json.loads(invoke_ok("evaluate", two_process_run, "--json", "--device", "cpu").stdout)
    assert result["model"] in ("pretrain", "refine")
    invoke_ok("inspect", two_process_run)


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker process of ``rank`` (read from /proc)."""
    for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    return None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers in /proc")
@pytest.mark.parametrize("mode", [(), ("--shard",)], ids=["data-parallel", "sharded"])
def test_a_killed_rank_fails_the_run_with_one_line(mode, tmp_path, trained_run, lightgcn_run):
    run_dir = copy_run(lightgcn_run if mode else trained_run, tmp_path / "run")  # --shard: LightGCN
    before = {name: (run_dir / name).read_bytes() for name in ("pretrain.safetensors", "refine.safetensors")}
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        launcher = torchrun(
            "refine", run_dir, "--epochs", "100000", "--patience", "100000", "--batch-size", "256",
            "--device", "cpu", *mode, stderr=err,
        )  # fmt: skip
        deadline = time.monotonic() + 240  # starting two processes on a loaded 2-core machine is slow
        while "refine epoch 2 " not in stderr.read_text():  # training is under way
            assert launcher.poll() is None and time.monotonic() < deadline, stderr.read_text()[-2000:]
            time.sleep(0.1)
        os.kill(rank_pid(launcher.pid, 1), signal.SIGKILL)
        killed = time.monotonic()
        launcher.wait(timeout=60)
    assert time.monotonic() - killed < 60
    assert launcher.returncode != 0
    errors = error_lines(stderr.read_text())
    # Two ways the survivor learns of it, in a race: gloo sees the dropped connection at the
    # next collective, or torchrun, seeing its worker die first, sends the survivor SIGTERM.
    # Either way it prints one line naming itself and exits non-zero.
    survivor = ("rank 0 of 2 lost a training process", "rank 0 of 2 stopped by SIGTERM")
    assert len(errors) == 1 and any(line in errors[0] for line in survivor), errors
    assert "rerun" in errors[0]
    for name, content in before.items():  # the last complete files, untouched and readable
        assert (run_dir / name).read_bytes() == content
    invoke_ok("evaluate", run_dir, "--model", "pretrain", "--device", "cpu")
    invoke_ok("refine", run_dir, "--epochs", "1", *TRAIN_OPTS)  # a rerun of the stage succeeds


def test_commands_that_do_not_train_refuse_torchrun(monkeypatch, trained_run):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert_clean_error(invoke("evaluate", trained_run), "without torchrun")


def test_a_launch_without_torchrun_is_one_line(monkeypatch, tmp_path, partitioned_run):
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    assert_clean_error(invoke("pretrain", run_dir, "--epochs", "1", *TRAIN_OPTS), "cannot join", "torchrun")


@pytest.mark.parametrize("name", ["legcf", "full", "qr", "tt", "pep"])
def test_a_worker_rebuilds_each_layer_exactly(name, partitioned_run):
    """What rank 0 sends (arrays and header) rebuilds the layer it trains, to the bit."""
    kind = layer_type(name)
    n = read_manifest(partitioned_run)["stages"]["prepare"]["metrics"]
    n = n["users"] + n["items"]
    assignment, _ = load_initial_assignment(RunDir(partitioned_run), n)
    size = LayerSize(n, 16, SEED, budget=4 * n, assignment=assignment, per_entity=PER_ENTITY)
    layer = kind.create(size)
    header = {"dim": "16", **layer.header()}
    copy = type(layer).replica(layer.arrays(), header, n)
    assert type(copy) is type(layer)
    assert layer.state_dict().keys() == copy.state_dict().keys()
    for key, value in layer.state_dict().items():
        assert torch.equal(value, copy.state_dict()[key]), key


# ------------------------------------------------------------------ sharded training (--shard)

# Two sharded ranks draw two seeded batch streams (each from its own users' positives), not
# one process's stream, so they agree with one process statistically: on the demo, per-epoch
# validation NDCG@20 within 0.0043 and losses within 0.0026 (measured); the test allows 0.01
# and 0.005. One sharded rank draws one process's stream: parameters agree to float rounding.
SHARDED_NDCG_TOLERANCE = 0.01
SHARDED_LOSS_TOLERANCE = 0.005


def test_sharded_rows_of_p_equal_the_single_process_p(tmp_path):
    from tests_graphs import small_graph

    from legcf_core.graph import bipartite_adjacency, expanded_adjacency, normalize_symmetric
    from legcf_core.propagation import linear_operator, to_torch_csr

    script = Path(__file__).with_name("shard_ranks.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run([*command, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    train, assignment, _ = small_graph()
    expanded = normalize_symmetric(expanded_adjacency(bipartite_adjacency(train), assignment))
    whole = linear_operator(to_torch_csr(expanded, torch.device("cpu")), assignment, 3).numpy()
    n, seen = assignment.shape[0], []
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz", allow_pickle=False) as part:
            assert part["own"].size > 0
            assert np.allclose(part["entity"], whole[part["own"]], rtol=0, atol=1e-6)
            assert np.allclose(part["meta"], whole[n:], rtol=0, atol=1e-6)
            seen.append(part["own"])
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(n))  # every row, on one rank


def train_stages(run_dir: Path, launch) -> None:
    """pretrain and refine at the shared trained run's settings, each launched by ``launch``."""
    launch("pretrain", run_dir, "--dim", DIM, "--layers", LAYERS, "--epochs", PRETRAIN_EPOCHS, *TRAIN_OPTS)
    launch("refine", run_dir, "--epochs", REFINE_EPOCHS, "--update-every", 1, *TRAIN_OPTS)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory, partitioned_run) -> Path:
    """pretrain and refine with ``--shard`` in two processes."""
    run_dir = copy_run(partitioned_run, tmp_path_factory.mktemp("sharded") / "run")
    stderr = run_dir.parent / "stderr.txt"

    def launch(*args):
        with open(stderr, "w") as err:
            process = torchrun(*args, "--shard", stderr=err)
            process.communicate(timeout=120)
        assert process.returncode == 0, stderr.read_text()[-3000:]

    train_stages(run_dir, launch)
    return run_dir


def test_two_sharded_ranks_train_what_one_process_trains(sharded_run, lightgcn_run):
    trained_run = lightgcn_run  # sharded training is LightGCN's
    one_stages, two_stages = read_manifest(trained_run)["stages"], read_manifest(sharded_run)["stages"]
    for stage in ("pretrain", "refine"):
        one, two = one_stages[stage]["history"], two_stages[stage]["history"]
        assert [h["ndcg@20"] for h in two] == pytest.approx(
            [h["ndcg@20"] for h in one], abs=SHARDED_NDCG_TOLERANCE
        )
        assert [h["loss"] for h in two] == pytest.approx([h["loss"] for h in one], abs=SHARDED_LOSS_TOLERANCE)
    result = json.loads(invoke_ok("evaluate", sharded_run, "--json", "--device", "cpu").stdout)
    single = json.loads(invoke_ok("evaluate", trained_run, "--json", "--device", "cpu").stdout)
    assert result["ndcg@20"] == pytest.approx(single["ndcg@20"], abs=SHARDED_NDCG_TOLERANCE)


def test_the_manifest_says_sharded_and_each_ranks_rows(sharded_run):
    stages = read_manifest(sharded_run)["stages"]
    counts = stages["prepare"]["metrics"]
    for stage in ("pretrain", "refine"):
        entry = stages[stage]
        assert (entry["world_size"], entry["backend"], entry["mode"]) == (2, "gloo", "sharded")
        assert len(entry["rank_rows"]) == 2 and min(entry["rank_rows"]) > 0
        assert sum(entry["rank_rows"]) == counts["users"] + counts["items"]
        assert sum(entry["rank_positives"]) == counts["train"] * len(entry["history"])
        assert len(entry["rank_peak_rss_mb"]) == 2 and min(entry["rank_peak_rss_mb"]) > 0


def test_one_sharded_rank_trains_as_one_process(tmp_path, partitioned_run, lightgcn_run):
    """--shard without torchrun: the same batches as one process; only P's rounding differs."""
    trained_run = lightgcn_run  # sharded training is LightGCN's
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    train_stages(run_dir, lambda *args: invoke_ok(*args, "--shard"))
    for name in ("pretrain.safetensors", "refine.safetensors"):
        one, _ = tensor_file(trained_run / name)
        sharded, _ = tensor_file(run_dir / name)
        assert np.allclose(sharded["codebook"], one["codebook"], rtol=0, atol=1e-5), name
    assert read_manifest(run_dir)["stages"]["refine"]["rank_rows"] == [
        sum(read_manifest(run_dir)["stages"]["prepare"]["metrics"][k] for k in ("users", "items"))
    ]


def test_shard_refuses_to_refine_mixed_layers(tmp_path, trained_run):
    """Sharded refine of a model pretrained on mixed layers (auto's LEGCF) fails in one line."""
    run_dir = copy_run(trained_run, tmp_path / "run")
    result = invoke("refine", run_dir, "--shard", "--epochs", "1", *TRAIN_OPTS)
    assert_clean_error(result, "--shard", "lightgcn")


@pytest.mark.parametrize("args", [("--embedding", "full"), ("--backbone", "ngcf")])
def test_shard_refuses_other_layers_and_backbones(args, tmp_path, partitioned_run):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    assert_clean_error(invoke("pretrain", run_dir, "--shard", "--epochs", "1", *args, *TRAIN_OPTS), "--shard")
