"""The linear shortcut H = P E_meta against explicit LightGCN propagation over the
expanded graph A' = [[A, S], [S^T, 0]], and the training losses (batch_bpr's
hand-written backward, the L2 term through l2_gram) against plain autograd."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import operator_model

from legcf_core.bpr import GATHER_SHARE, batch_bpr, batch_counts, batch_objective
from legcf_core.graph import bipartite_adjacency, expanded_adjacency, normalize_symmetric
from legcf_core.layers.codebook import l2_gram
from legcf_core.propagation import linear_operator, to_torch_csr

CPU = torch.device("cpu")


# ------------------------------------------------------------ references


def random_problem(seed: int, n_users=6, n_items=9, c=5, d=4, t=2, unused_column=True):
    """A small random bipartite graph, a row-stochastic sparse S and a codebook E."""
    rng = np.random.default_rng(seed)
    R = (rng.random((n_users, n_items)) < 0.35).astype(np.float64)
    R[0] = 0.0  # a user without training edges (only in test)
    R[:, 0] = 0.0  # an item without training edges
    R[1, 1] = 1.0
    n = n_users + n_items
    usable = c - 1 if unused_column else c  # last meta-embedding unused: a degree-0 node in A'
    S = np.zeros((n, c))
    for p in range(n):
        cols = rng.choice(usable, size=t, replace=False)
        S[p, cols] = rng.dirichlet(np.ones(t))
    E = rng.normal(size=(c, d))
    return R, S, E


def dense_reference(R, S, E, layers):
    """Explicit LightGCN over A' in float64: H0 = [S E; E], H = mean_l Ahat'^l H0."""
    n_users, n_items = R.shape
    n, c = n_users + n_items, S.shape[1]
    R, S = torch.as_tensor(R, dtype=torch.float64), torch.as_tensor(S, dtype=torch.float64)
    E = torch.as_tensor(E, dtype=torch.float64)
    A = torch.zeros(n, n, dtype=torch.float64)
    A[:n_users, n_users:] = R
    A[n_users:, :n_users] = R.T
    Ap = torch.zeros(n + c, n + c, dtype=torch.float64)
    Ap[:n, :n] = A
    Ap[:n, n:] = S
    Ap[n:, :n] = S.T
    degree = Ap.sum(1)
    inv_sqrt = torch.where(degree > 0, degree.clamp_min(1e-300) ** -0.5, torch.zeros_like(degree))
    Ahat = inv_sqrt[:, None] * Ap * inv_sqrt[None, :]
    h = torch.cat([S @ E, E])
    total = h
    for _ in range(layers):
        h = Ahat @ h
        total = total + h
    return total / (layers + 1), Ahat


def plain_bpr(h, users, pos, neg):
    """Mean of -ln sigmoid(h_u.h_i - h_u.h_j) over every (u, i, j) with plain autograd."""
    losses = []
    for b in range(users.numel()):
        hu, hi = h[users[b]], h[pos[b]]
        for j in neg[b]:
            losses.append(-torch.nn.functional.logsigmoid((hu * hi).sum() - (hu * h[j]).sum()))
    return torch.stack(losses).mean()


def make_model(R, S, E, layers, t=2):
    n_users = R.shape[0]
    return operator_model(
        bipartite_adjacency(sp.csr_matrix(R.astype(np.float32))),
        n_users,
        sp.csr_matrix(S.astype(np.float32)),
        torch.from_numpy(E.astype(np.float32)),
        t,
        layers,
        CPU,
    )


# ------------------------------------------------------------------ graph


def test_bipartite_and_expanded_adjacency_blocks():
    R, S, _ = random_problem(1)
    n_users = R.shape[0]
    n = R.shape[0] + R.shape[1]
    A = bipartite_adjacency(sp.csr_matrix(R.astype(np.float32))).toarray()
    assert A.shape == (n, n)
    np.testing.assert_array_equal(A[:n_users, n_users:], R)
    np.testing.assert_array_equal(A[n_users:, :n_users], R.T)
    assert not A[:n_users, :n_users].any() and not A[n_users:, n_users:].any()
    Ap = expanded_adjacency(sp.csr_matrix(A), sp.csr_matrix(S.astype(np.float32))).toarray()
    np.testing.assert_array_equal(Ap[:n, :n], A)
    np.testing.assert_allclose(Ap[:n, n:], S, rtol=1e-6)
    np.testing.assert_allclose(Ap[n:, :n], S.T, rtol=1e-6)
    assert not Ap[n:, n:].any()


def test_normalize_symmetric_matches_dense_with_zero_degree_nodes():
    R, S, E = random_problem(2)
    _, Ahat = dense_reference(R, S, E, 1)
    n = R.shape[0] + R.shape[1]
    A = bipartite_adjacency(sp.csr_matrix(R.astype(np.float32)))
    Ap = expanded_adjacency(A, sp.csr_matrix(S.astype(np.float32)))
    got = normalize_symmetric(Ap).toarray()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, Ahat.numpy(), rtol=1e-5, atol=1e-7)
    # The unused meta-embedding has degree 0: its row and column are zero.
    assert not got[n + S.shape[1] - 1].any() and not got[:, n + S.shape[1] - 1].any()


# ------------------------------------------------------- linear shortcut


@pytest.mark.parametrize("layers", [0, 1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_linear_operator_matches_explicit_propagation(layers, seed):
    R, S, E = random_problem(seed)
    expected, Ahat = dense_reference(R, S, E, layers)
    model = make_model(R, S, E, layers)
    n = R.shape[0] + R.shape[1]
    np.testing.assert_allclose(model.entity_embeddings().detach().numpy(), expected[:n], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.meta_embeddings().detach().numpy(), expected[n:], rtol=1e-4, atol=1e-5)

    # P itself: mean_l Ahat'^l [S; I], built by linear_operator.
    A = bipartite_adjacency(sp.csr_matrix(R.astype(np.float32)))
    S32 = sp.csr_matrix(S.astype(np.float32))
    P = linear_operator(to_torch_csr(normalize_symmetric(expanded_adjacency(A, S32)), CPU), S32, layers)
    x = torch.cat([torch.as_tensor(S), torch.eye(S.shape[1], dtype=torch.float64)])
    total = x
    for _ in range(layers):
        x = Ahat @ x
        total = total + x
    np.testing.assert_allclose(P.numpy(), (total / (layers + 1)).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 3])
def test_scores_and_bpr_gradients_match_explicit_propagation(layers):
    R, S, E = random_problem(3)
    n_users = R.shape[0]
    rng = np.random.default_rng(10)
    users = torch.from_numpy(rng.integers(0, n_users, size=7))
    pos = torch.from_numpy(rng.integers(0, R.shape[1], size=7) + n_users)
    neg = torch.from_numpy(rng.integers(0, R.shape[1], size=(7, 3)) + n_users)

    # Reference: explicit propagation, plain autograd, float64.
    E_ref = torch.tensor(E, dtype=torch.float64, requires_grad=True)
    H_ref, _ = dense_reference(R, S, E_ref, layers)
    n = R.shape[0] + R.shape[1]
    scores_ref = H_ref[:n_users] @ H_ref[n_users:n].T
    loss_ref = plain_bpr(H_ref, users, pos, neg)
    loss_ref.backward()

    # The engine: H = P E_meta and the custom-backward BPR loss.
    model = make_model(R, S, E, layers)
    h = model.entity_embeddings()
    scores = h[:n_users] @ h[n_users:].T
    np.testing.assert_allclose(scores.detach().numpy(), scores_ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    loss = batch_bpr(h, users, pos, neg)
    loss.backward()
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    np.testing.assert_allclose(model.codebook.grad.numpy(), E_ref.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_a_batch_computed_from_its_rows_alone_gives_the_whole_products_loss_and_gradient():
    """A step that gathers only the batch's rows of P (O(batch), used on large graphs) has the
    loss, L2 term and codebook gradient of the step through H = P E_meta whole."""
    R, S, E = random_problem(6, n_users=40, n_items=60, c=8, d=4)
    n_users, n = R.shape[0], R.shape[0] + R.shape[1]
    rng = np.random.default_rng(2)
    users, items = rng.integers(1, n_users, size=5), rng.integers(1, R.shape[1], size=5)
    negatives = rng.integers(1, R.shape[1], size=(5, 3))
    counts = batch_counts(n, n_users, users, items, negatives)
    assert np.count_nonzero(counts) <= GATHER_SHARE * n  # so batch_objective gathers rows

    whole = make_model(R, S, E, 2)
    h, l2 = whole.outputs(counts)
    index = [torch.from_numpy(x) for x in (users, items + n_users, negatives + n_users)]
    expected = batch_bpr(h, *index) + l2 * (3e-4 / 10)
    expected.backward()
    gathered = make_model(R, S, E, 2)
    loss = batch_objective(gathered, users, items, negatives, 3e-4)
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    np.testing.assert_allclose(
        gathered.codebook.grad.numpy(), whole.codebook.grad.numpy(), rtol=1e-5, atol=1e-7
    )


def test_operator_is_rebuilt_when_assignment_changes():
    R, S, E = random_problem(4)
    model = make_model(R, S, E, 2)
    _, S_new, _ = random_problem(5)
    model.set_assignment(sp.csr_matrix(S_new.astype(np.float32)))
    expected, _ = dense_reference(R, S_new, E, 2)
    n = R.shape[0] + R.shape[1]
    np.testing.assert_allclose(model.entity_embeddings().detach().numpy(), expected[:n], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- BPR loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_bpr_matches_autograd(dtype):
    rng = np.random.default_rng(3)
    n_rows, d = 12, 5
    h0 = torch.from_numpy(rng.normal(size=(n_rows, d))).to(dtype)
    # Repeated users, positives and negatives: the backward must accumulate them.
    users = torch.tensor([0, 0, 1, 2, 2, 2])
    pos = torch.tensor([5, 6, 5, 7, 7, 11])
    neg = torch.tensor([[8, 9, 8], [9, 9, 10], [6, 11, 8], [5, 8, 9], [10, 10, 10], [0, 5, 8]])

    h_fast = h0.clone().requires_grad_(True)
    fast = batch_bpr(h_fast, users, pos, neg)
    (3.0 * fast).backward()  # a non-unit upstream gradient

    h_ref = h0.clone().requires_grad_(True)
    ref = plain_bpr(h_ref, users, pos, neg)
    (3.0 * ref).backward()

    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert fast.item() == pytest.approx(ref.item(), rel=tol)
    np.testing.assert_allclose(h_fast.grad.numpy(), h_ref.grad.numpy(), rtol=tol, atol=tol)
    # Rows never touched by the batch get no gradient.
    untouched = sorted(set(range(n_rows)) - set(users.tolist() + pos.tolist() + neg.flatten().tolist()))
    assert untouched == [3, 4]
    assert not h_fast.grad[untouched].any()


def test_batch_bpr_by_hand():
    # One triplet in 1-d: loss = softplus(h_u h_j - h_u h_i) = ln(1 + e^(2*1 - 2*3)).
    h = torch.tensor([[2.0], [3.0], [1.0]], dtype=torch.float64, requires_grad=True)
    loss = batch_bpr(h, torch.tensor([0]), torch.tensor([1]), torch.tensor([[2]]))
    assert loss.item() == pytest.approx(np.log1p(np.exp(-4.0)))
    loss.backward()
    sig = 1 / (1 + np.exp(4.0))  # sigma(margin), margin = -4
    np.testing.assert_allclose(h.grad.numpy().ravel(), [sig * (1 - 3), sig * -2, sig * 2], rtol=1e-12)


# --------------------------------------------------------------- L2 term


def test_l2_gram_equals_weighted_row_norms():
    rng = np.random.default_rng(4)
    n, c, d = 30, 7, 4
    dense = np.zeros((n, c))
    for p in range(n):
        cols = rng.choice(c, size=3, replace=False)
        dense[p, cols] = rng.random(3)
    S = sp.csr_matrix(dense.astype(np.float32))
    counts = rng.integers(0, 4, size=n).astype(np.float64) + rng.random(n)
    E = rng.normal(size=(c, d))
    W = l2_gram(S, counts)
    assert W.shape == (c, c)
    trace = np.trace(E.T @ W @ E)
    direct = sum(counts[p] * np.sum((dense[p] @ E) ** 2) for p in range(n))
    assert trace == pytest.approx(direct, rel=1e-5)


def test_batch_counts_by_hand():
    # 2 users, 4 items (entities 2..5); two negatives per positive, each weighted 1/2.
    users = np.array([0, 0, 1])
    items = np.array([0, 1, 1])
    negatives = np.array([[2, 3], [3, 3], [0, 2]])
    counts = batch_counts(6, 2, users, items, negatives)
    expected = np.zeros(6)
    for u, i, negs in zip(users, items, negatives, strict=True):
        expected[u] += 1
        expected[2 + i] += 1
        for j in negs:
            expected[2 + j] += 1 / len(negs)
    np.testing.assert_allclose(counts, expected)
    np.testing.assert_allclose(counts, [2, 1, 1.5, 2, 1, 1.5])


def test_l2_term_equals_paper_regularizer():
    """(lambda/2B) tr(E^T W E) = (lambda/2) mean_b (|e_u|^2 + |e_i|^2 + mean_j |e_j|^2), e = S E."""
    R, S, E = random_problem(6, t=3)
    n_users, n_items = R.shape
    n = n_users + n_items
    rng = np.random.default_rng(6)
    users = rng.integers(0, n_users, size=9)
    items = rng.integers(0, n_items, size=9)
    negatives = rng.integers(0, n_items, size=(9, 4))
    W = l2_gram(sp.csr_matrix(S.astype(np.float32)), batch_counts(n, n_users, users, items, negatives))
    lam = 0.3
    fast = lam / (2 * users.size) * np.trace(E.T @ W @ E)
    e = S @ E
    per_triplet = [
        np.sum(e[u] ** 2) + np.sum(e[n_users + i] ** 2) + np.mean([np.sum(e[n_users + j] ** 2) for j in js])
        for u, i, js in zip(users, items, negatives, strict=True)
    ]
    assert fast == pytest.approx(lam / 2 * np.mean(per_triplet), rel=1e-5)
