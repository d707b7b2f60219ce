"""Initial assignments (Section 3.4): METIS or random anchors, weight w* on the
anchor and (1-w*)/(t-1) on t-1 other distinct meta-embeddings; size checks."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import scipy.sparse as sp

from legcf_core.data import load_dataset
from legcf_core.errors import ConfigError
from legcf_core.graph import bipartite_adjacency
from legcf_core.partition import check_sizes, initial_assignment, metis_partition, random_partition


@pytest.fixture(scope="module")
def demo_adjacency(demo_path):
    data = load_dataset(demo_path)
    return bipartite_adjacency(data.train)


def check_initial_rows(S: sp.csr_matrix, anchors: np.ndarray, c: int, t: int, w: float) -> None:
    S = S.tocsr()
    assert S.shape == (anchors.size, c)
    assert np.all(np.diff(S.indptr) == t), "every row has exactly t nonzeros"
    np.testing.assert_allclose(np.asarray(S.sum(axis=1)).ravel(), 1.0, atol=1e-6)
    anchor_weight = 1.0 if t == 1 else w
    other_weight = None if t == 1 else (1 - w) / (t - 1)
    for p in range(S.shape[0]):
        cols = S.indices[S.indptr[p] : S.indptr[p + 1]]
        vals = S.data[S.indptr[p] : S.indptr[p + 1]]
        assert len(set(cols.tolist())) == t, f"row {p}: columns not distinct"
        assert anchors[p] in cols, f"row {p}: anchor {anchors[p]} missing"
        weights = dict(zip(cols.tolist(), vals.tolist(), strict=True))
        assert weights[int(anchors[p])] == pytest.approx(anchor_weight, abs=1e-6)
        for col, value in weights.items():
            if col != anchors[p]:
                assert value == pytest.approx(other_weight, abs=1e-6)


@pytest.mark.parametrize(("c", "t", "w"), [(50, 2, 0.5), (20, 3, 0.7), (64, 1, 0.5), (8, 5, 0.2)])
def test_metis_initial_assignment(demo_adjacency, c, t, w):
    n = demo_adjacency.shape[0]
    part = metis_partition(demo_adjacency, c, seed=3)
    assert part.parts.shape == (n,)
    assert part.parts.min() >= 0 and part.parts.max() < c
    assert part.edge_cut >= 0
    S = initial_assignment(part.parts, c, t, w, seed=3)
    check_initial_rows(S, part.parts, c, t, w)


def test_metis_cut_matches_its_parts_and_is_seeded(demo_adjacency):
    part = metis_partition(demo_adjacency, 16, seed=11)
    coo = sp.triu(demo_adjacency).tocoo()
    cut = int((part.parts[coo.row] != part.parts[coo.col]).sum())
    assert part.edge_cut == cut
    # Far better than a random split, which cuts about 15/16 of the edges.
    assert cut < 0.8 * coo.nnz
    again = metis_partition(demo_adjacency, 16, seed=11)
    np.testing.assert_array_equal(part.parts, again.parts)


def test_metis_separates_disconnected_communities():
    # Two disjoint complete bipartite blocks: users 0-2 x items 0-3 and users 3-5 x items 4-7.
    R = np.zeros((6, 8), dtype=np.float32)
    R[:3, :4] = 1
    R[3:, 4:] = 1
    A = bipartite_adjacency(sp.csr_matrix(R))
    part = metis_partition(A, 2, seed=0)
    assert part.edge_cut == 0
    users, items = part.parts[:6], part.parts[6:]
    block_a = np.r_[users[:3], items[:4]]
    block_b = np.r_[users[3:], items[4:]]
    assert len(set(block_a)) == 1 and len(set(block_b)) == 1
    assert block_a[0] != block_b[0]


def test_single_part_is_all_zeros(demo_adjacency):
    part = metis_partition(demo_adjacency, 1, seed=0)
    assert not part.parts.any()


@pytest.mark.parametrize(("c", "t", "w"), [(30, 2, 0.5), (7, 7, 0.4), (5, 1, 0.9)])
def test_random_initial_assignment(c, t, w):
    n = 500
    part = random_partition(n, c, seed=4)
    assert part.parts.shape == (n,) and part.edge_cut == -1
    assert part.parts.min() >= 0 and part.parts.max() < c
    assert len(np.unique(part.parts)) == c  # 500 draws over <= 30 parts hit all of them
    S = initial_assignment(part.parts, c, t, w, seed=4)
    check_initial_rows(S, part.parts, c, t, w)
    if t == c:
        assert S.nnz == n * c


def test_random_partition_and_assignment_are_seeded():
    a = random_partition(200, 10, seed=1).parts
    np.testing.assert_array_equal(a, random_partition(200, 10, seed=1).parts)
    assert not np.array_equal(a, random_partition(200, 10, seed=2).parts)
    S1 = initial_assignment(a, 10, 3, 0.5, seed=1)
    S2 = initial_assignment(a, 10, 3, 0.5, seed=1)
    S3 = initial_assignment(a, 10, 3, 0.5, seed=2)
    assert (S1 != S2).nnz == 0
    assert (S1 != S3).nnz > 0


def test_check_sizes_accepts_boundaries():
    check_sizes(10, 10, 10)  # c = N and t = c are allowed
    check_sizes(10, 1, 1)


@pytest.mark.parametrize(
    ("n", "c", "t", "needle"),
    [(10, 11, 2, "exceeds the number of entities"), (10, 5, 6, "exceeds codebook size"), (10, 5, 0, ">= 1")],
    ids=["c>N", "t>c", "t<1"],
)
def test_check_sizes_rejects(n, c, t, needle):
    with pytest.raises(ConfigError, match=needle):
        check_sizes(n, c, t)


def test_check_sizes_rejects_empty_codebook():
    with pytest.raises(ConfigError):
        check_sizes(10, 0, 1)


@pytest.mark.parametrize("w", [0.0, -0.1, 1.5])
def test_anchor_weight_out_of_range(w):
    with pytest.raises(ConfigError, match="anchor_weight w"):
        initial_assignment(np.zeros(4, dtype=np.int64), 3, 2, w, seed=0)


def test_anchor_weight_one_with_several_meta_embeddings_keeps_t_nonzeros_or_is_rejected():
    anchors = np.array([0, 1, 2, 0], dtype=np.int64)
    try:
        S = initial_assignment(anchors, 3, 2, 1.0, seed=0)
    except ConfigError:
        return
    assert np.all(np.diff(S.indptr) == 2)


def test_large_t_relative_to_c_finishes_quickly():
    def too_slow(signum, frame):
        raise TimeoutError("initial_assignment did not finish in 3 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        S = initial_assignment(np.arange(40, dtype=np.int64) % 30, 30, 30, 0.5, seed=0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert np.all(np.diff(S.indptr) == 30)
