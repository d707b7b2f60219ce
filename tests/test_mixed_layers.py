"""LightGCN with mixed layers (``lightgcn-mix``): the same H on both of LEGCF's paths, its
weights in the model file, the learning rate they train at, and who gets it by default."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from legcf_core.backbones import MIX_LR_SCALE, LightGCN, MixedLightGCN
from legcf_core.config import TrainConfig
from legcf_core.errors import ConfigError
from legcf_core.graph import bipartite_adjacency, normalize_symmetric
from legcf_core.layers.codebook import CodebookLayer, OperatorModel, operator_declined
from legcf_core.model import PropagationModel
from legcf_core.propagation import to_torch_csr
from legcf_core.registry import resolve_backbone
from legcf_core.schedule import adam, decay_lr, follow_schedule
from tests.test_baselines import CPU, random_legcf


def mixed(dim: int, layers: int, seed: int = 0) -> MixedLightGCN:
    """A mixed backbone whose weights are no longer LightGCN's mean."""
    backbone = MixedLightGCN(dim, layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        backbone.mix.copy_(torch.rand(layers + 1, dim, generator=generator))
    return backbone


def test_mixed_layers_start_as_lightgcn():
    train, _, _, _ = random_legcf(1)
    graph = to_torch_csr(normalize_symmetric(bipartite_adjacency(train)), CPU)
    x0 = torch.randn(graph.shape[0], 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(MixedLightGCN(4, 3)(graph, x0), LightGCN(4, 3)(graph, x0))


def test_mixed_layers_weigh_each_dimension_on_its_own():
    """Weights (1, 0, ...) keep layer 0 in that dimension; (0, ..., 1) the last layer."""
    train, _, _, _ = random_legcf(2)
    graph = to_torch_csr(normalize_symmetric(bipartite_adjacency(train)), CPU)
    x0 = torch.randn(graph.shape[0], 2, generator=torch.Generator().manual_seed(2))
    backbone = MixedLightGCN(2, 2)
    with torch.no_grad():
        backbone.mix.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    h = backbone(graph, x0)
    torch.testing.assert_close(h[:, 0], x0[:, 0])
    torch.testing.assert_close(h[:, 1], torch.sparse.mm(graph, torch.sparse.mm(graph, x0))[:, 1])


def test_operator_path_matches_explicit_propagation_with_mixed_layers():
    """P in blocks, one a layer, gives the explicit path's H, L2 term, gradients (the codebook's
    and the layer weights') and assignment update."""
    train, n_users, assignment, codebook = random_legcf(5)
    adjacency = bipartite_adjacency(train)
    fast_backbone, slow_backbone = mixed(3, 2, seed=3), mixed(3, 2, seed=3)
    fast = OperatorModel(CodebookLayer(codebook, assignment, 2), adjacency, n_users, 2, CPU, fast_backbone)
    slow = PropagationModel(CodebookLayer(codebook, assignment, 2), slow_backbone, adjacency, n_users, CPU)
    counts = np.arange(adjacency.shape[0], dtype=np.float64) % 3
    h_fast, l2_fast = fast.outputs(counts)
    h_slow, l2_slow = slow.outputs(counts)
    torch.testing.assert_close(h_fast, h_slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l2_fast, l2_slow, rtol=1e-5, atol=1e-6)
    rows = np.array([0, 3, 7])
    torch.testing.assert_close(fast.entity_rows(rows), h_slow[rows], rtol=1e-5, atol=1e-6)
    ((h_fast**2).sum() + l2_fast).backward()
    ((h_slow**2).sum() + l2_slow).backward()
    torch.testing.assert_close(fast.codebook.grad, slow.layer.codebook.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_backbone.mix.grad, slow_backbone.mix.grad, rtol=1e-4, atol=1e-5)
    assert len(fast.parameters()) == 2
    fast.update_assignment()
    slow.update_assignment()
    np.testing.assert_allclose(fast.assignment.toarray(), slow.assignment.toarray(), atol=1e-5)


def test_operator_state_carries_the_layer_weights():
    train, n_users, assignment, codebook = random_legcf(4)
    adjacency = bipartite_adjacency(train)
    first = OperatorModel(CodebookLayer(codebook, assignment, 2), adjacency, n_users, 2, CPU, mixed(3, 2, 1))
    second = OperatorModel(CodebookLayer(codebook, assignment, 2), adjacency, n_users, 2, CPU, mixed(3, 2, 2))
    assert not torch.equal(first.entity_embeddings(), second.entity_embeddings())
    assert sorted(first.state()) == ["backbone.mix", "codebook"]
    second.load_state(first.state())
    torch.testing.assert_close(first.entity_embeddings(), second.entity_embeddings())


def test_layer_weights_train_at_a_share_of_the_learning_rate():
    """adam puts them in their own group; plateau decay and the cosine schedule keep the ratio."""
    codebook = torch.nn.Parameter(torch.zeros(3, 2))
    backbone = MixedLightGCN(2, 3)
    optimizer = adam([codebook, backbone.mix], 0.1)
    rates = sorted(group["lr"] for group in optimizer.param_groups)
    assert rates == pytest.approx([0.1 * MIX_LR_SCALE, 0.1])
    decay_lr(optimizer, 0.5)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([0.05 * MIX_LR_SCALE, 0.05])
    follow_schedule(optimizer, TrainConfig(lr=0.2, epochs=10, lr_schedule="cosine"), 1)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([0.2 * MIX_LR_SCALE, 0.2])
    assert len(adam([codebook], 0.1).param_groups) == 1


def test_auto_backbone_by_layer():
    assert resolve_backbone("auto", "legcf") == "lightgcn-mix"
    assert resolve_backbone("auto", "legcf", sharded=True) == "lightgcn"
    for layer in ("full", "qr", "pep", "tt"):
        assert resolve_backbone("auto", layer) == "lightgcn"
    assert resolve_backbone("ngcf", "legcf") == "ngcf"
    with pytest.raises(ConfigError, match="backbone"):
        resolve_backbone("lightgcnn", "legcf")


def test_mixed_operator_costs_a_block_a_layer():
    """At Gowalla's size (c = 1,000) one mean operator pays, four blocks of it do not."""
    n, nnz = 70_839, 1_620_256 + 4 * 70_839
    assert operator_declined(n, 1000, 3, nnz) is None
    reason = operator_declined(n, 1000, 3, nnz, mixed=True)
    assert reason is not None and "4 x (N+c) x c" in reason


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "legcf_cli.app", *args], capture_output=True, text=True)


def test_default_run_trains_and_stores_mixed_layers(tmp_path):
    """legcf run's LEGCF model holds the layer weights it trained; evaluate reads them back and
    scores what run reported; a full table stays on LightGCN."""
    run = tmp_path / "demo"
    result = run_cli("-q", "run", str(run), "--pretrain-epochs", "2", "--refine-epochs", "1", "--json")
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout)
    assert reported["backbone"] == "lightgcn-mix"
    from legcf_core.tensor_files import read_tensors

    arrays, meta = read_tensors(run / "pretrain.safetensors")
    assert meta["backbone"] == "lightgcn-mix" and arrays["backbone.mix"].shape == (4, 64)
    assert not np.allclose(arrays["backbone.mix"], 0.25)  # trained, not the start
    evaluated = run_cli("-q", "evaluate", str(run), "--split", "test", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["ndcg@20"] == pytest.approx(reported["ndcg@20"], abs=1e-6)
    full_run = ("-q", "run", str(tmp_path / "full"), "--embedding", "full", "--pretrain-epochs", "1")
    full = run_cli(*full_run, "--json")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["backbone"] == "lightgcn"
