"""The baseline tables (full, QR, PEP) and the NGCF / LR-GCCF backbones: budgets
solved exactly, QR ids composed uniquely, PEP pruned to its budget, and each
backbone's propagation against a hand-computed example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from legcf_core.backbones import LRGCCF, NGCF, LightGCN, graph_tensor, symmetric_product
from legcf_core.errors import ConfigError
from legcf_core.graph import bipartite_adjacency
from legcf_core.layers import LayerSize
from legcf_core.layers.codebook import CodebookLayer, OperatorModel, legcf_params, operator_pays
from legcf_core.layers.full import FullLayer
from legcf_core.layers.pep import PEPLayer, PrunedLayer, prune_to_budget
from legcf_core.layers.qr import QRLayer, qr_remainders
from legcf_core.model import PropagationModel, StoredModel, trainable
from legcf_core.partition import initial_assignment

CPU = torch.device("cpu")


# ------------------------------------------------------------------- QR


@given(st.integers(2, 5000), st.integers(1, 16), st.integers(0, 4000))
def test_qr_remainders_spend_the_budget_and_no_more(n, d, slack):
    smallest = math.isqrt(n - 1) + 1
    budget = (smallest + math.ceil(n / smallest)) * d + slack
    r = qr_remainders(n, d, budget)
    assert (r + math.ceil(n / r)) * d <= budget
    if r < n:  # one more remainder would not fit
        assert (r + 1 + math.ceil(n / (r + 1))) * d > budget


def test_qr_rejects_a_budget_below_its_minimum():
    with pytest.raises(ConfigError, match="at least"):
        qr_remainders(10_000, 8, 100)


def test_qr_composes_unique_embeddings_with_the_solved_parameter_count():
    n, d = 70_839, 16
    budget = legcf_params(n, d, 500, 2)
    r = qr_remainders(n, d, budget)
    table = QRLayer.create(LayerSize(n, d, seed=3, budget=budget))
    assert table.remainder.shape[0] == r
    assert table.stored_params() == (r + math.ceil(n / r)) * d <= budget
    with torch.no_grad():
        rows = table()
    assert rows.shape == (n, d)
    assert torch.unique(rows, dim=0).shape[0] == n  # distinct ids, distinct embeddings
    ids = torch.arange(n)
    pairs = torch.unique(torch.stack([ids // r, ids % r], 1), dim=0)
    assert pairs.shape[0] == n
    std = float(rows.std())
    xavier_std = (6.0 / (n + d)) ** 0.5 / math.sqrt(3)
    assert 0.5 * xavier_std < std < 2 * xavier_std


# ------------------------------------------------------------------ PEP


def test_pep_soft_threshold_by_hand():
    weight = torch.tensor([[0.5, -0.2], [0.01, -0.9]])
    threshold = torch.logit(torch.tensor([0.1, 0.3]))
    table = PEPLayer(weight, threshold, budget=2)
    expected = torch.tensor([[0.4, 0.0], [0.0, -0.6]])
    torch.testing.assert_close(table(), expected)
    assert table.stored_params() == 2


def test_prune_to_budget_keeps_the_largest_entries():
    pruned = torch.tensor([[0.0, 3.0, -1.0], [0.5, -4.0, 0.0], [2.0, 0.0, 0.1]])
    table = prune_to_budget(pruned, 3)
    assert table.nnz == 3
    assert sorted(np.abs(table.data).tolist()) == [2.0, 3.0, 4.0]
    assert prune_to_budget(pruned, 10).nnz == 6  # under budget: every nonzero survives


def test_sparse_table_trains_only_its_pattern():
    pattern = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    table = PrunedLayer(pattern, torch.tensor([1.0, 2.0, 3.0]), np.zeros(3, np.float32), budget=3)
    dense = table()
    torch.testing.assert_close(dense, torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    (dense * torch.arange(6.0).view(2, 3)).sum().backward()
    torch.testing.assert_close(table.values.grad, torch.tensor([0.0, 2.0, 4.0]))
    assert table.stored_params() == 3
    assert table.refine_start().values.abs().sum() == 0  # retraining starts from the initial values


# ------------------------------------------------------------- backbones


def tiny_graph():
    """Two users, two items: u0-i0, u0-i1, u1-i1 (node order u0 u1 i0 i1)."""
    return sp.csr_matrix(np.array([[1, 1], [0, 1]], dtype=np.float32))


# Hand-computed D^-1/2 A D^-1/2 of the tiny graph: degrees u0 2, u1 1, i0 1, i1 2.
H = 1 / math.sqrt(2)
AHAT = np.array(
    [
        [0, 0, H, 0.5],
        [0, 0, 0, H],
        [H, 0, 0, 0],
        [0.5, H, 0, 0],
    ]
)
X0 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])


def test_lightgcn_on_the_tiny_graph_by_hand():
    adjacency = graph_tensor(LightGCN(2, 1), bipartite_adjacency(tiny_graph()), CPU)
    np.testing.assert_allclose(adjacency.to_dense().numpy(), AHAT, atol=1e-7)
    h = LightGCN(2, 1)(adjacency, torch.tensor(X0, dtype=torch.float32))
    # user 0 after one layer: H * x(i0) + 0.5 * x(i1) = (H + 1, H - 0.5); mean with x0
    np.testing.assert_allclose(h[0].numpy(), [(1 + H + 1) / 2, (0 + H - 0.5) / 2], rtol=1e-6)
    np.testing.assert_allclose(h.numpy(), (X0 + AHAT @ X0) / 2, rtol=1e-6)


def test_lrgccf_adds_self_loops_and_concatenates_linear_layers():
    backbone = LRGCCF(2, 1, seed=0)
    with torch.no_grad():
        backbone.weights[0].copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    adjacency = graph_tensor(backbone, bipartite_adjacency(tiny_graph()), CPU)
    degree = np.array([3.0, 2.0, 2.0, 3.0])  # with self-loops
    a_self = (AHAT != 0) + np.eye(4)
    expected_adj = a_self / np.sqrt(degree[:, None] * degree[None, :])
    np.testing.assert_allclose(adjacency.to_dense().numpy(), expected_adj, rtol=1e-6)
    h = backbone(adjacency, torch.tensor(X0, dtype=torch.float32)).detach().numpy()
    layer1 = expected_adj @ X0 @ np.array([[1.0, 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(h, np.hstack([X0, layer1]), rtol=1e-5)
    # user 1 (self-loop and item 1): (x_u1/2 + x_i1/sqrt 6) W
    user1 = (X0[1] / 2 + X0[3] / math.sqrt(6)) @ np.array([[1.0, 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(h[1, 2:], user1, rtol=1e-5)


def test_ngcf_layer_by_hand():
    backbone = NGCF(2, 1, seed=0)
    w1 = np.array([[1.0, 0.0], [0.5, 1.0]])
    w2 = np.array([[0.0, 1.0], [1.0, 0.0]])
    with torch.no_grad():
        backbone.w1[0].copy_(torch.tensor(w1))
        backbone.w2[0].copy_(torch.tensor(w2))
        backbone.b1[0].fill_(0.1)
    adjacency = graph_tensor(backbone, bipartite_adjacency(tiny_graph()), CPU)
    h = backbone(adjacency, torch.tensor(X0, dtype=torch.float32)).detach().numpy()
    side = AHAT @ X0
    z = (side + X0) @ w1 + 0.1 + (side * X0) @ w2
    z = np.where(z > 0, z, 0.2 * z)
    np.testing.assert_allclose(h, np.hstack([X0, z]), rtol=1e-5, atol=1e-6)


def test_symmetric_product_gradient_matches_dense_autograd():
    adjacency = graph_tensor(LightGCN(2, 1), bipartite_adjacency(tiny_graph()), CPU)
    x = torch.tensor(X0, dtype=torch.float32, requires_grad=True)
    weights = torch.arange(8.0).view(4, 2)
    (symmetric_product(adjacency, x) * weights).sum().backward()
    x_ref = torch.tensor(X0, dtype=torch.float32, requires_grad=True)
    ((adjacency.to_dense() @ x_ref) * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


# ------------------------------------------- LEGCF through the explicit path


def random_legcf(seed: int):
    rng = np.random.default_rng(seed)
    n_users, n_items, c, d = 7, 9, 4, 3
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.4).astype(np.float32))
    rows = []
    for _ in range(n_users + n_items):
        cols = rng.choice(c, size=2, replace=False)
        weights = rng.dirichlet(np.ones(2))
        row = np.zeros(c, dtype=np.float32)
        row[cols] = weights
        rows.append(row)
    assignment = sp.csr_matrix(np.array(rows))
    codebook = torch.from_numpy(rng.normal(size=(c, d)).astype(np.float32))
    return train, n_users, assignment, codebook


def test_codebook_table_on_lightgcn_matches_the_linear_operator():
    """The explicit path (PropagationModel) and the shortcut (OperatorModel) agree: H,
    the L2 term, their gradients and the assignment update."""
    train, n_users, assignment, codebook = random_legcf(5)
    adjacency = bipartite_adjacency(train)
    fast = OperatorModel(CodebookLayer(codebook, assignment, 2), adjacency, n_users, 2, CPU)
    slow = PropagationModel(CodebookLayer(codebook, assignment, 2), LightGCN(3, 2), adjacency, n_users, CPU)
    counts = np.arange(adjacency.shape[0], dtype=np.float64) % 3
    h_fast, l2_fast = fast.outputs(counts)
    h_slow, l2_slow = slow.outputs(counts)
    torch.testing.assert_close(h_fast, h_slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l2_fast, l2_slow, rtol=1e-5, atol=1e-6)
    ((h_fast**2).sum() + l2_fast).backward()
    ((h_slow**2).sum() + l2_slow).backward()
    torch.testing.assert_close(fast.codebook.grad, slow.layer.codebook.grad, rtol=1e-4, atol=1e-5)
    fast.update_assignment()
    slow.update_assignment()
    np.testing.assert_allclose(fast.assignment.toarray(), slow.assignment.toarray(), atol=1e-5)
    assert fast.stored_params() == slow.stored_params() == codebook.numel() + fast.assignment.nnz


@pytest.mark.parametrize("solver", ["pinv", "pursuit"])
@pytest.mark.parametrize("backbone", [NGCF, LRGCCF])
def test_assignment_update_on_concatenated_layers(backbone, solver):
    """With NGCF or LR-GCCF the update solves on the backbone's concatenated outputs
    and still gives at most t nonzeros per row (clipping may drop one), non-negative,
    summing to 1 under pinv."""
    train, n_users, assignment, codebook = random_legcf(9)
    layer = CodebookLayer(codebook, assignment, 2)
    layer.solver = solver
    model = PropagationModel(
        layer,
        backbone(3, 2, seed=1),
        bipartite_adjacency(train),
        n_users,
        CPU,
    )
    h = model.entity_embeddings()
    assert h.shape == (train.shape[0] + train.shape[1], 3 * 3)
    model.update_assignment()
    per_row = np.diff(model.assignment.indptr)
    assert ((per_row >= 1) & (per_row <= 2)).all() and model.assignment.data.min() >= 0
    if solver == "pinv":
        np.testing.assert_allclose(np.asarray(model.assignment.sum(axis=1)).ravel(), 1.0, rtol=1e-5)
    assert model.graph.shape[0] == train.shape[0] + train.shape[1] + codebook.shape[0]


def test_graph_model_state_round_trip():
    train, n_users, _, _ = random_legcf(2)
    adjacency = bipartite_adjacency(train)
    first = PropagationModel(FullLayer(torch.randn(16, 3)), NGCF(3, 2, seed=1), adjacency, n_users, CPU)
    second = PropagationModel(FullLayer(torch.zeros(16, 3)), NGCF(3, 2, seed=2), adjacency, n_users, CPU)
    assert not torch.equal(first.entity_embeddings(), second.entity_embeddings())
    second.load_state(first.state())
    torch.testing.assert_close(first.entity_embeddings(), second.entity_embeddings())
    assert any(name.startswith("backbone.w1") for name in first.state())


def test_operator_pays_at_small_codebooks_only():
    """On Gowalla's graph (70,839 entities, 1,620,256 adjacency nonzeros, t = 2)
    P is the cheaper path at c = 500 and explicit propagation at c = 10,000."""
    n, nnz = 70_839, 1_620_256
    assert operator_pays(n, 500, 3, nnz + 2 * 2 * n)
    assert not operator_pays(n, 10_000, 3, nnz + 2 * 2 * n)


@pytest.mark.parametrize("c, operator", [(2, True), (250, False)])
def test_build_model_chooses_the_cheaper_legcf_path(c, operator):
    """A codebook large against the graph trains by explicit propagation, with the
    same state keys and parameter count as the operator path."""
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((150, 150)) < 0.005).astype(np.float32))
    n = sum(train.shape)
    assignment = initial_assignment(rng.integers(0, c, size=n), c, 2, 0.5, 0)
    layer = CodebookLayer.create(LayerSize(n, 4, seed=0, assignment=assignment, per_entity=2))
    model = trainable(StoredModel(layer, LightGCN(4, 2), "lightgcn", 4, 2, 0), train, 150, CPU)
    assert isinstance(model, OperatorModel) is operator
    assert set(model.state()) == {"codebook"}
    assert model.stored_params() == c * 4 + assignment.nnz
