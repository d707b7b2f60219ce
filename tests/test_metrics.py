"""Recall@K and NDCG@K (legcf_core.evaluation) against hand-computed cases and a
slow per-user reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from legcf_core.evaluation import evaluate, popularity_scores


def csr(rows: dict[int, list[int]], shape: tuple[int, int]) -> sp.csr_matrix:
    dense = np.zeros(shape, dtype=np.float32)
    for user, items in rows.items():
        dense[user, items] = 1.0
    return sp.csr_matrix(dense)


def embeddings_for(scores: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """User/item embeddings whose dot products are exactly ``scores`` (users x items)."""
    n_users = scores.shape[0]
    return torch.eye(n_users, dtype=torch.float64), torch.from_numpy(scores.T.astype(np.float64).copy())


def reference_metrics(scores, train, truth, k):
    """Per-user loop: rank all items by score, drop training items, compare the top k."""
    recalls, ndcgs = [], []
    for user in range(scores.shape[0]):
        relevant = set(truth[user].indices.tolist())
        if not relevant:
            continue
        seen = set(train[user].indices.tolist())
        ranked = [i for i in sorted(range(scores.shape[1]), key=lambda i: -scores[user, i]) if i not in seen]
        top = ranked[:k]
        hits = [1.0 if item in relevant else 0.0 for item in top]
        recalls.append(sum(hits) / len(relevant))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
        ndcgs.append(dcg / idcg)
    if not recalls:
        return 0.0, 0.0, 0
    return float(np.mean(recalls)), float(np.mean(ndcgs)), len(recalls)


def test_hand_computed_single_user_with_training_item_excluded():
    # Items ranked 0 > 1 > 2 > 3 > 4 > 5; item 1 is a training item, items 2 and 5 are held out.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    train = csr({0: [1]}, (1, 6))
    truth = csr({0: [2, 5]}, (1, 6))
    user, item = embeddings_for(scores)
    result = evaluate(user, item, train, truth, ks=(3, 10))

    # Ranking without item 1: 0, 2, 3, 4, 5. Top-3 = [0, 2, 3] -> one hit at rank 1.
    assert result["recall@3"] == pytest.approx(1 / 2)
    idcg = 1 + 1 / math.log2(3)
    assert result["ndcg@3"] == pytest.approx((1 / math.log2(3)) / idcg)
    # K=10 exceeds the 5 rankable items: both hits (ranks 1 and 4) are found.
    assert result["recall@10"] == pytest.approx(1.0)
    assert result["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / idcg)
    assert result["users"] == 1


def test_training_item_ranked_first_does_not_take_a_slot():
    # If the top-scored training item were ranked, the held-out item would fall out of the top-1.
    scores = np.array([[5.0, 4.0, 1.0]])
    train = csr({0: [0]}, (1, 3))
    truth = csr({0: [1]}, (1, 3))
    user, item = embeddings_for(scores)
    result = evaluate(user, item, train, truth, ks=(1,))
    assert result["recall@1"] == 1.0
    assert result["ndcg@1"] == 1.0


def test_user_with_fewer_relevant_items_than_k():
    # One relevant item, ranked first: NDCG normalizes by the ideal DCG of 1 item, so it is 1.
    scores = np.array([[3.0, 2.0, 1.0, 0.5, 0.1]])
    truth = csr({0: [0]}, (1, 5))
    user, item = embeddings_for(scores)
    result = evaluate(user, item, csr({}, (1, 5)), truth, ks=(3,))
    assert result["recall@3"] == 1.0
    assert result["ndcg@3"] == pytest.approx(1.0)

    # The same item at rank 2 (0-based): DCG 1/log2(4), ideal 1.
    truth = csr({0: [2]}, (1, 5))
    result = evaluate(user, item, csr({}, (1, 5)), truth, ks=(3,))
    assert result["recall@3"] == 1.0
    assert result["ndcg@3"] == pytest.approx(1 / math.log2(4))

    # Two relevant items, K=3, hits at ranks 0 and 2; ideal DCG over 2 positions only.
    truth = csr({0: [0, 2]}, (1, 5))
    result = evaluate(user, item, csr({}, (1, 5)), truth, ks=(3,))
    assert result["ndcg@3"] == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))


def test_users_without_held_out_items_are_ignored():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # user 0: ranking 0, 2, 3, 1
            [0.2, 0.8, 0.6, 0.4],  # user 1: no held-out items
            [0.1, 0.2, 0.3, 0.4],  # user 2: ranking 3, 2, 1, 0
        ]
    )
    truth = csr({0: [0], 2: [0, 1]}, (3, 4))
    user, item = embeddings_for(scores)
    result = evaluate(user, item, csr({}, (3, 4)), truth, ks=(2,))
    # user 0: hit at rank 0 -> recall 1, ndcg 1. user 2: top-2 = [3, 2] -> no hit.
    assert result["users"] == 2
    assert result["recall@2"] == pytest.approx((1.0 + 0.0) / 2)
    assert result["ndcg@2"] == pytest.approx((1.0 + 0.0) / 2)


def test_no_evaluable_users_gives_zeros():
    user, item = embeddings_for(np.array([[1.0, 2.0]]))
    result = evaluate(user, item, csr({}, (1, 2)), csr({}, (1, 2)), ks=(1,))
    assert result["users"] == 0
    assert result["recall@1"] == 0.0 and result["ndcg@1"] == 0.0


def test_popularity_scores_are_item_counts():
    train = csr({0: [0, 2], 1: [2], 2: [1, 2, 3]}, (3, 5))
    np.testing.assert_array_equal(popularity_scores(train), [1, 1, 3, 1, 0])


@pytest.mark.parametrize("block_users", [1, 3, 2048])
def test_matches_reference_on_random_data(block_users):
    rng = np.random.default_rng(0)
    n_users, n_items = 11, 30
    scores = rng.random((n_users, n_items))  # continuous: no ties
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    held = (rng.random((n_users, n_items)) < 0.15) & (train.toarray() == 0)
    held[3] = False  # one user without held-out items
    truth = sp.csr_matrix(held.astype(np.float32))
    user, item = embeddings_for(scores)
    result = evaluate(user, item, train, truth, ks=(5, 20), block_users=block_users)
    for k in (5, 20):
        recall, ndcg, users = reference_metrics(scores, train, truth, k)
        assert result["users"] == users == n_users - 1
        assert result[f"recall@{k}"] == pytest.approx(recall, abs=1e-12)
        assert result[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n_users=st.integers(1, 6),
    n_items=st.integers(1, 12),
    k=st.integers(1, 15),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_bounds_and_reference(n_users, n_items, k, seed):
    rng = np.random.default_rng(seed)
    scores = rng.random((n_users, n_items))
    train_mask = rng.random((n_users, n_items)) < 0.3
    truth_mask = (rng.random((n_users, n_items)) < 0.4) & ~train_mask
    train = sp.csr_matrix(train_mask.astype(np.float32))
    truth = sp.csr_matrix(truth_mask.astype(np.float32))
    user, item = embeddings_for(scores)
    result = evaluate(user, item, train, truth, ks=(k,), block_users=2)
    recall, ndcg, users = reference_metrics(scores, train, truth, k)
    assert result["users"] == users
    assert 0.0 <= result[f"recall@{k}"] <= 1.0 + 1e-12
    assert 0.0 <= result[f"ndcg@{k}"] <= 1.0 + 1e-12
    assert result[f"recall@{k}"] == pytest.approx(recall, abs=1e-12)
    assert result[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)


def test_precision_hitrate_and_mrr_hand_computed():
    # Ranking without training item 1: 0, 2, 3, 4, 5; items 2 and 5 are held out (ranks 1 and 4).
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    user, item = embeddings_for(scores)
    result = evaluate(user, item, csr({0: [1]}, (1, 6)), csr({0: [2, 5]}, (1, 6)), ks=(1, 3, 10))
    assert result["precision@1"] == 0.0 and result["hitrate@1"] == 0.0 and result["mrr@1"] == 0.0
    assert result["precision@3"] == pytest.approx(1 / 3)
    assert result["hitrate@3"] == 1.0
    assert result["mrr@3"] == pytest.approx(1 / 2)  # the first hit is the 2nd item shown
    # K=10 exceeds the 5 rankable items: precision still divides by K, as the literature does.
    assert result["precision@10"] == pytest.approx(2 / 10)
    assert result["mrr@10"] == pytest.approx(1 / 2)


def test_precision_hitrate_and_mrr_average_over_users():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # user 0: ranking 0, 2, 3, 1; held out 3 (3rd shown)
            [0.1, 0.2, 0.3, 0.4],  # user 1: ranking 3, 2, 1, 0; held out 0 (4th shown)
            [0.2, 0.8, 0.6, 0.4],  # user 2: ranking 1, 2, 3, 0; held out 1 and 2 (1st, 2nd)
        ]
    )
    user, item = embeddings_for(scores)
    truth = csr({0: [3], 1: [0], 2: [1, 2]}, (3, 4))
    result = evaluate(user, item, csr({}, (3, 4)), truth, ks=(3,))
    assert result["precision@3"] == pytest.approx((1 / 3 + 0 + 2 / 3) / 3)
    assert result["hitrate@3"] == pytest.approx(2 / 3)
    assert result["mrr@3"] == pytest.approx((1 / 3 + 0 + 1) / 3)


@pytest.mark.parametrize("block_users", [1, 4, 2048])
def test_precision_hitrate_mrr_match_a_per_user_loop(block_users):
    rng = np.random.default_rng(3)
    n_users, n_items, k = 9, 25, 7
    scores = rng.random((n_users, n_items))
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    held = (rng.random((n_users, n_items)) < 0.2) & (train.toarray() == 0)
    truth = sp.csr_matrix(held.astype(np.float32))
    user, item = embeddings_for(scores)
    result = evaluate(user, item, train, truth, ks=(k,), block_users=block_users)
    precision, hitrate, mrr = [], [], []
    for u in range(n_users):
        relevant = set(truth[u].indices.tolist())
        if not relevant:
            continue
        seen = set(train[u].indices.tolist())
        ranked = [i for i in np.argsort(-scores[u]).tolist() if i not in seen][:k]
        hits = [r for r, i in enumerate(ranked) if i in relevant]
        precision.append(len(hits) / k)
        hitrate.append(1.0 if hits else 0.0)
        mrr.append(1 / (hits[0] + 1) if hits else 0.0)
    assert result[f"precision@{k}"] == pytest.approx(np.mean(precision), abs=1e-12)
    assert result[f"hitrate@{k}"] == pytest.approx(np.mean(hitrate), abs=1e-12)
    assert result[f"mrr@{k}"] == pytest.approx(np.mean(mrr), abs=1e-12)
