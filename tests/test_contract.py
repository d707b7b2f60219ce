"""The contract test: every registered embedding layer on every registered backbone
goes through the stages its class says apply, through the real CLI, on tiny data.

Nothing here names a layer or a backbone: the stages come from the layer class's
capability flags (``uses_partition``, ``sized_by_budget``, ``refines``), so a
newly registered layer is covered without editing this file.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import copy_run, invoke_ok, read_manifest, write_lightgcn

from legcf_core import stages
from legcf_core.artifacts import RunDir
from legcf_core.evaluation import evaluate
from legcf_core.registry import BACKBONES, LAYERS, layer_type

USERS, ITEMS, PER_USER = 60, 50, 8
DIM, CODEBOOK, PER_ENTITY = 8, 8, 2
BUDGET = (USERS + ITEMS) * DIM // 3  # for layers sized by budget: a third of a full table
TRAIN = ["--epochs", "1", "--batch-size", "1024", "--lr", "0.02", "--seed", "7", "--device", "cpu"]
KS = (10, 20)
METRICS = [f"{name}@{k}" for name in ("recall", "ndcg") for k in KS]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny dataset, prepared once (read-only: each test works on a copy)."""
    root = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(0)
    train, test = {}, {}
    for user in range(USERS):  # two taste groups, so that training has something to find
        pool = np.arange(ITEMS // 2) + (ITEMS // 2) * (user % 2)
        items = rng.choice(pool, PER_USER + 2, replace=False)
        train[user], test[user] = sorted(items[:PER_USER].tolist()), sorted(items[PER_USER:].tolist())
    write_lightgcn(root / "data" / "train.txt", train)
    write_lightgcn(root / "data" / "test.txt", test)
    run_dir = root / "prepared"
    invoke_ok("prepare", run_dir, "--data", root / "data", "--seed", "7")
    return run_dir


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("embedding", list(LAYERS))
def test_every_layer_on_every_backbone_through_the_stages(prepared, tmp_path, embedding, backbone):
    kind = layer_type(embedding)
    run_dir = copy_run(prepared, tmp_path / "run")
    if kind.uses_partition:
        invoke_ok("partition", run_dir, "-c", CODEBOOK, "-t", PER_ENTITY, "--seed", "7")
    sizing = ["--budget", BUDGET] if kind.sized_by_budget else []
    invoke_ok(
        "pretrain", run_dir, "--embedding", embedding, "--backbone", backbone, "--dim", DIM,
        "--layers", "2", *sizing, *TRAIN,
    )  # fmt: skip
    if kind.refines:
        invoke_ok("refine", run_dir, *TRAIN)
    recorded = read_manifest(run_dir)["stages"]
    optional = {"partition": kind.uses_partition, "refine": kind.refines}
    expected = {"prepare", "pretrain"} | {stage for stage, applies in optional.items() if applies}
    assert set(recorded) == expected
    for stage in recorded.values():  # every stage's files are written, with the checksums it recorded
        for name, digest in stage["outputs"].items():
            assert hashlib.sha256((run_dir / name).read_bytes()).hexdigest() == digest

    evaluated = json.loads(invoke_ok("evaluate", run_dir, "--json", "--device", "cpu").stdout)
    assert evaluated["users"] > 0
    for metric in METRICS:
        assert 0.0 <= evaluated[metric] <= 1.0, (metric, evaluated[metric])

    output = tmp_path / "model.safetensors"
    exported = json.loads(invoke_ok("export", run_dir, "-o", output, "--json").stdout)
    assert output.is_file() and output.stat().st_size == exported["bytes"] > 0
    assert (exported["embedding"], exported["backbone"]) == (embedding, backbone)

    # the exported file scores exactly like evaluate on the run directory
    data = stages.load_data(RunDir(run_dir))
    loaded = stages.load_export(output)
    h = loaded.embeddings()
    assert h.shape[0] == data.n_entities
    rescored = evaluate(h[: data.n_users], h[data.n_users :], data.train, data.test, KS)
    assert rescored["users"] == evaluated["users"]
    for metric in METRICS:
        assert rescored[metric] == pytest.approx(evaluated[metric], abs=1e-6), metric

    # inspect counts what the layer stores, within the budget where one sized it
    summary = json.loads(invoke_ok("inspect", output, "--json").stdout)
    of_run = json.loads(invoke_ok("inspect", run_dir, "--json").stdout)
    stored = loaded.model.layer.stored_params()
    assert summary["params"] == of_run["params"] == exported["params"] == stored > 0
    pretrain = read_manifest(run_dir)["stages"]["pretrain"]
    if not kind.refines:
        assert pretrain["metrics"]["params"] == stored
    assert summary["entities"] == data.n_entities and summary["dim"] == DIM
    assert summary["embedding"] == embedding and summary["backbone"] == backbone
    if kind.sized_by_budget:
        assert pretrain["config"]["budget"] == BUDGET
        assert summary["params"] <= BUDGET
