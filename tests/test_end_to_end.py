"""A small run on the shipped demo data, through the CLI: it beats popularity,
evaluate/inspect/export agree with each other and with an independent
recomputation of the model's embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import CODEBOOK, DIM, LAYERS, PER_ENTITY, copy_run, invoke_ok, read_manifest
from safetensors import safe_open

from legcf_core import stages
from legcf_core.artifacts import RunDir
from legcf_core.evaluation import evaluate, popularity_scores
from legcf_core.packing import read_uints


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, trained_run):
    """A private copy: evaluate and export record their results in the manifest."""
    return copy_run(trained_run, tmp_path_factory.mktemp("e2e") / "run")


@pytest.fixture(scope="module")
def data(run_dir):
    return stages.load_data(RunDir(run_dir))


@pytest.fixture(scope="module")
def test_json(run_dir):
    return json.loads(invoke_ok("evaluate", run_dir, "--json", "--device", "cpu").stdout)


def read_model_file(path):
    """A model file read with the safetensors library; an export's integers in the documented
    narrow layout."""
    with safe_open(str(path), framework="np") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        layers = int(handle.metadata()["layers"])
    indices = read_uints(tensors, "assignment.indices", (None,))
    if "assignment.indptr" in tensors:  # a run directory's file: the wide layout
        indptr = tensors["assignment.indptr"]
    else:
        indptr = np.concatenate([[0], np.cumsum(read_uints(tensors, "assignment.counts", (None,)))])
    shape = tuple(tensors["assignment.shape"])
    return (
        tensors["codebook"],
        sp.csr_matrix((tensors["assignment.data"], indices, indptr), shape=shape),
        layers,
        tensors.get("backbone.mix"),  # the layer weights of mixed layers (LEGCF's default backbone)
    )


def dense_embeddings(
    train: sp.csr_matrix, S: sp.csr_matrix, E: np.ndarray, layers: int, mix: np.ndarray | None = None
) -> np.ndarray:
    """H_full by explicit propagation over A' = [[A, S], [S^T, 0]] (float64, dense): the mean of
    the layers, or with ``mix`` ((L+1) x d) each layer weighed in each dimension."""
    n_users, n_items = train.shape
    n, c = n_users + n_items, S.shape[1]
    Ap = np.zeros((n + c, n + c))
    Ap[:n_users, n_users:n] = train.toarray()
    Ap[n_users:n, :n_users] = train.toarray().T
    Ap[:n, n:] = S.toarray()
    Ap[n:, :n] = S.toarray().T
    degree = Ap.sum(1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1e-300)), 0.0)
    Ahat = inv[:, None] * Ap * inv[None, :]
    h = np.vstack([S.toarray() @ E, E])
    weights = np.full((layers + 1, E.shape[1]), 1.0 / (layers + 1)) if mix is None else mix.astype(np.float64)
    total = h * weights[0]
    for layer in range(1, layers + 1):
        h = Ahat @ h
        total += h * weights[layer]
    return total[:n]


def test_evaluate_json_keys(test_json, data):
    assert {"split", "users", "recall@20", "ndcg@20", "recall@10", "ndcg@10"} <= set(test_json)
    assert test_json["split"] == "test"
    assert test_json["users"] == int((np.diff(data.test.indptr) > 0).sum())
    for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert 0.0 <= test_json[key] <= 1.0
    assert test_json["recall@20"] >= test_json["recall@10"]


def test_beats_popularity(test_json, data):
    popularity = torch.from_numpy(popularity_scores(data.train))[:, None]
    baseline = evaluate(torch.ones(data.n_users, 1), popularity, data.train, data.test)
    assert baseline["users"] == test_json["users"]
    assert baseline["ndcg@20"] > 0.0
    assert test_json["ndcg@20"] > baseline["ndcg@20"], (test_json, baseline)


def test_metrics_match_an_independent_recomputation(run_dir, test_json, data):
    """Embeddings by explicit propagation from the saved codebook and S give evaluate's numbers."""
    model_file = run_dir / (
        "refine.safetensors" if test_json["model"] == "refine" else "pretrain.safetensors"
    )
    codebook, S, layers, mix = read_model_file(model_file)
    assert layers == LAYERS and mix is not None and mix.shape == (LAYERS + 1, DIM)  # lightgcn-mix
    h = torch.from_numpy(dense_embeddings(data.train, S, codebook.astype(np.float64), layers, mix))
    ours = evaluate(h[: data.n_users], h[data.n_users :], data.train, data.test)
    for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert ours[key] == pytest.approx(test_json[key], abs=2e-6), key


def test_valid_metrics_reproduce_the_recorded_best(run_dir):
    """The kept model is the one validated: evaluating it on valid gives refine's best NDCG@20."""
    valid = json.loads(invoke_ok("evaluate", run_dir, "--split", "valid", "--json", "--device", "cpu").stdout)
    recorded = read_manifest(run_dir)["stages"]["refine"]["metrics"]
    assert valid["split"] == "valid"
    assert valid["ndcg@20"] == pytest.approx(recorded["ndcg@20"], abs=2e-6)
    assert valid["recall@20"] == pytest.approx(recorded["recall@20"], abs=2e-6)


def test_refine_history_and_updates(run_dir):
    manifest = read_manifest(run_dir)
    refine = manifest["stages"]["refine"]
    assert [e["updated"] for e in refine["history"]] == [True] * len(refine["history"])
    assert len(refine["rows_kept_at_update"]) == len(refine["history"])
    pretrain_losses = [e["loss"] for e in manifest["stages"]["pretrain"]["history"]]
    assert pretrain_losses[-1] < pretrain_losses[0]  # training makes progress


def test_inspect_run_dir_and_export(run_dir, tmp_path):
    exported = tmp_path / "model.safetensors"
    export = json.loads(invoke_ok("export", run_dir, "-o", exported, "--json").stdout)
    from_run = json.loads(invoke_ok("inspect", run_dir, "--json").stdout)
    from_file = json.loads(invoke_ok("inspect", exported, "--json").stdout)
    codebook, S, _, _ = read_model_file(exported)
    n_entities = S.shape[0]
    for summary in (from_run, from_file):
        expected = {"params", "full_table_params", "meta_embeddings", "per_entity", "dim", "entities"}
        assert expected <= set(summary)
        assert summary["meta_embeddings"] == CODEBOOK == codebook.shape[0]
        assert summary["dim"] == DIM == codebook.shape[1]
        assert summary["per_entity"] == np.diff(S.indptr).max() <= 2 * PER_ENTITY  # pooled codes
        assert summary["entities"] == n_entities
        assert summary["params"] == CODEBOOK * DIM + S.nnz
        assert summary["full_table_params"] == n_entities * max(DIM, 128)
        assert summary["params"] < summary["full_table_params"]
    assert export["params"] == from_run["params"] == from_file["params"]
    assert S.nnz <= PER_ENTITY * n_entities
    assert np.all(np.diff(S.indptr) >= 1)


def test_exported_embeddings_give_the_same_metrics(run_dir, test_json, data, tmp_path):
    exported = tmp_path / "model.safetensors"
    invoke_ok("export", run_dir, "-o", exported)
    model = stages.load_export(exported)
    np.testing.assert_array_equal(model.user_ids, data.user_ids)
    np.testing.assert_array_equal(model.item_ids, data.item_ids)
    assert model.n_users == data.n_users
    h = model.embeddings()
    assert h.shape == (data.n_entities, DIM)
    metrics = evaluate(h[: data.n_users], h[data.n_users :], data.train, data.test)
    for key in ("users", "recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert metrics[key] == pytest.approx(test_json[key], abs=1e-6), key
