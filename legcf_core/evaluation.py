"""Full-ranking evaluation: Recall, NDCG, Precision, HitRate and MRR at K over all
items, in user blocks.

For each evaluated user every item is scored, the user's training items are
excluded, and the top max(K) are compared with the held-out items T_u
(ranks r count from 0):

    Recall@K    = |top-K ∩ T_u| / |T_u|
    NDCG@K      = sum_{r<K, top_r in T_u} 1/log2(r+2)  /  sum_{r<min(K,|T_u|)} 1/log2(r+2)
    Precision@K = |top-K ∩ T_u| / K
    HitRate@K   = 1 if top-K ∩ T_u is not empty, else 0
    MRR@K       = 1/(r+1) for the first r < K with top_r in T_u, else 0

Metrics are averaged over users with at least one held-out item. All five come
from the same 0/1 hit matrix, so they always describe the same ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

DEFAULT_KS = (10, 20)


METRICS = ("recall", "ndcg", "precision", "hitrate", "mrr")


def metric_names(ks: Sequence[int]) -> list[str]:
    """Every metric at every cut-off, in the order outputs show them."""
    return [f"{name}@{k}" for k in ks for name in METRICS]


def pair_keys(matrix: sp.csr_matrix) -> np.ndarray:
    """Sorted int64 keys row * n_cols + col of a CSR matrix's nonzeros (sorted indices)."""
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    return rows * matrix.shape[1] + matrix.indices.astype(np.int64)


def hit_matrix(top_items: np.ndarray, truth_keys: np.ndarray, users: np.ndarray, n_items: int) -> np.ndarray:
    """hits[b, r] = 1 if the r-th ranked item of users[b] is held out for that user."""
    keys = users[:, None].astype(np.int64) * n_items + top_items
    pos = np.searchsorted(truth_keys, keys)
    pos = np.minimum(pos, truth_keys.size - 1)
    return (truth_keys[pos] == keys).astype(np.float64)


def metrics_from_hits(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user metrics (:data:`METRICS`) at each K from a 0/1 hit matrix ranked best-first."""
    discounts = 1.0 / np.log2(np.arange(hits.shape[1]) + 2.0)
    reciprocal = 1.0 / np.arange(1, hits.shape[1] + 1)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        top = hits[:, :k]
        found = top.sum(axis=1)
        out[f"recall@{k}"] = found / n_relevant
        dcg = (top * discounts[:k]).sum(axis=1)
        ideal_len = np.minimum(n_relevant, k).astype(np.int64)
        idcg = np.cumsum(discounts[:k])[ideal_len - 1]
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"precision@{k}"] = found / k
        out[f"hitrate@{k}"] = (found > 0).astype(np.float64)
        # the first hit's reciprocal rank: the largest of 1/(r+1) over the hits
        out[f"mrr@{k}"] = (top * reciprocal[:k]).max(axis=1, initial=0.0)
    return out


def rank_block(user_emb: torch.Tensor, item_emb: torch.Tensor, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """Indices of the top-k items for a block of users, excluded items masked out."""
    scores = user_emb @ item_emb.T
    if exclude.nnz:
        coo = exclude.tocoo()
        rows = torch.from_numpy(coo.row.astype(np.int64)).to(scores.device)
        cols = torch.from_numpy(coo.col.astype(np.int64)).to(scores.device)
        scores[rows, cols] = -torch.inf
    return torch.topk(scores, k, dim=1).indices.cpu().numpy()


SCORE_BLOCK = 2**26
"""Scores one evaluation block may hold (256 MB of float32): 1,024 users up to 65,536 items, fewer
users on larger catalogues, so memory stays flat however many items there are."""


def users_per_block(n_items: int) -> int:
    """Users ranked at once: 1,024, or fewer so that a block's scores stay within SCORE_BLOCK."""
    return max(1, min(1024, SCORE_BLOCK // max(n_items, 1)))


def scored_users(truth: sp.csr_matrix, sample: int | None = None, seed: int = 0) -> np.ndarray:
    """The users with held-out items, or a seeded sample of ``sample`` of them (all of them if
    there are no more): on a large graph a sample keeps ranking every item affordable."""
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if sample is None or sample >= users.size:
        return users
    chosen = np.random.default_rng(seed).choice(users.size, size=sample, replace=False)
    return users[np.sort(chosen)]


def evaluate(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train: sp.csr_matrix,
    truth: sp.csr_matrix,
    ks: Sequence[int] = DEFAULT_KS,
    block_users: int | None = None,
    on_block: Callable[[int], None] | None = None,
    per_user: dict[str, np.ndarray] | None = None,
    users: np.ndarray | None = None,
    rows_of_users: bool = False,
) -> dict[str, float]:
    """Mean metrics over ``users`` (default: all with held-out items, :func:`scored_users`);
    with ``rows_of_users`` ``user_emb`` holds only their rows, in order. ``on_block(n)``
    reports progress. Given a dict, ``per_user`` receives each scored user's index
    (``"user"``) and metric values."""
    n_relevant_all = np.diff(truth.indptr)
    users = scored_users(truth) if users is None else users
    k_max = min(max(ks), item_emb.shape[0])
    block_size = block_users or users_per_block(item_emb.shape[0])
    rows: dict[str, list[np.ndarray]] = {name: [] for name in metric_names(ks)}
    truth_keys = pair_keys(truth)
    with torch.no_grad():
        for start in range(0, users.size, block_size):
            block = users[start : start + block_size]
            positions = np.arange(start, start + block.size) if rows_of_users else block
            index = torch.from_numpy(positions).to(user_emb.device)
            top = rank_block(user_emb.index_select(0, index), item_emb, train[block], k_max)
            hits = hit_matrix(top, truth_keys, block, truth.shape[1])
            if hits.shape[1] < max(ks):
                hits = np.pad(hits, ((0, 0), (0, max(ks) - hits.shape[1])))
            for name, values in metrics_from_hits(hits, n_relevant_all[block], ks).items():
                rows[name].append(values)
            if on_block is not None:
                on_block(block.size)
    if per_user is not None:
        per_user["user"] = users
        per_user.update(
            {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in rows.items()}
        )
    # block by block, as the means were always summed (the same figures to the last digit)
    sums = {name: sum(float(part.sum()) for part in parts) for name, parts in rows.items()}
    result = {name: (total / users.size if users.size else 0.0) for name, total in sums.items()}
    result["users"] = int(users.size)
    return result


def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """Item interaction counts: the popularity baseline's score for every user."""
    return np.asarray(train.sum(axis=0), dtype=np.float32).ravel()
