"""Initial assignments (Section 3.4): METIS or random anchors, weight w* on the
anchor and (1-w*)/(t-1) on t-1 other distinct meta-embeddings, drawn uniformly or
from the parts an entity's edges reach; size checks."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import copy_run, invoke_ok, read_manifest

from legcf_core import artifacts as art
from legcf_core.data import load_dataset
from legcf_core.errors import ConfigError
from legcf_core.graph import bipartite_adjacency
from legcf_core.partition import (
    check_sizes,
    initial_assignment,
    metis_partition,
    neighbor_others,
    random_partition,
)
from legcf_core.stages.inputs import load_data, load_initial_assignment


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


@pytest.mark.parametrize(("c", "t", "w"), [(16, 2, 0.5), (20, 4, 0.7), (64, 1, 0.5)])
def test_neighbor_others_are_parts_the_edges_reach(demo_adjacency, c, t, w):
    part = metis_partition(demo_adjacency, c, seed=3)
    S = initial_assignment(part.parts, c, t, w, seed=3, adjacency=demo_adjacency)
    check_initial_rows(S, part.parts, c, t, w)
    adjacency = demo_adjacency.tocsr()
    drawn_uniformly = 0
    for p in range(S.shape[0]):
        reached = set(part.parts[adjacency.indices[adjacency.indptr[p] : adjacency.indptr[p + 1]]].tolist())
        reached.discard(int(part.parts[p]))
        others = set(S.indices[S.indptr[p] : S.indptr[p + 1]].tolist()) - {int(part.parts[p])}
        if len(reached) >= t - 1:
            assert others <= reached, f"row {p}: {others} not among the parts its edges reach {reached}"
        else:  # every reached part is taken, the rest drawn uniformly
            assert reached <= others
            drawn_uniformly += 1
    assert drawn_uniformly < 0.5 * S.shape[0]


def test_neighbor_others_are_the_parts_reached_most_with_ties_broken_at_random():
    # User 0 (part 0) has 5 items in part 1, 2 in part 2, 2 in part 3 and one in part 4.
    R = sp.csr_matrix(np.ones((1, 10), dtype=np.float32))
    adjacency = bipartite_adjacency(R)
    anchors = np.array([0] + [1] * 5 + [2] * 2 + [3] * 2 + [4], dtype=np.int64)
    firsts, seconds = set(), set()
    for seed in range(40):
        row = neighbor_others(adjacency, anchors, 6, 3, np.random.default_rng(seed))[0]
        firsts.add(int(row[0]))
        seconds.add(int(row[1]))
        assert sorted(row[1:].tolist()) == [2, 3], "the tied runners-up, never part 4"
    assert firsts == {1}
    assert seconds == {2, 3}, "a tie goes either way"
    # Item 0 reaches only user 0's part: one place filled, the next left to uniform draws (-1).
    np.testing.assert_array_equal(
        neighbor_others(adjacency, anchors, 6, 2, np.random.default_rng(0))[1], [0, -1]
    )


def test_neighbor_others_fill_entities_without_outside_edges_uniformly():
    # Two disjoint blocks, each one part, plus an isolated user: nobody reaches another part.
    R = np.zeros((7, 8), dtype=np.float32)
    R[:3, :4] = 1
    R[3:6, 4:] = 1
    adjacency = bipartite_adjacency(sp.csr_matrix(R))
    anchors = np.array([0, 0, 0, 1, 1, 1, 2] + [0] * 4 + [1] * 4, dtype=np.int64)
    assert (neighbor_others(adjacency, anchors, 5, 2, np.random.default_rng(0)) == -1).all()
    first = initial_assignment(anchors, 5, 3, 0.6, seed=0, adjacency=adjacency)
    check_initial_rows(first, anchors, 5, 3, 0.6)
    again = initial_assignment(anchors, 5, 3, 0.6, seed=0, adjacency=adjacency)
    assert (first != again).nnz == 0


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


def _share_of_others_reached(run_dir, adjacency: sp.csr_matrix) -> float:
    """Of S0's non-anchor entries, the share that are parts the entity's edges reach."""
    tensors, _ = art.read_tensors(run_dir / art.PARTITION_FILE)
    parts = np.asarray(tensors["parts"])
    S, _ = load_initial_assignment(art.RunDir(run_dir), adjacency.shape[0])
    rows = np.repeat(np.arange(S.shape[0]), np.diff(S.indptr))
    outside = S.indices != parts[rows]
    reach = (adjacency @ sp.csr_matrix((np.ones(parts.size), (np.arange(parts.size), parts)))).tocsr()
    return float(np.mean(np.asarray(reach[rows[outside], S.indices[outside]]).ravel() > 0))


def test_partition_command_records_and_applies_others(tmp_path, prepared_run):
    """`legcf partition --others`: the manifest says how S0 drew the others; neighbor takes
    parts the entity's edges reach, far more often than uniform draws do."""
    adjacency = bipartite_adjacency(load_data(art.RunDir(prepared_run)).train)
    share = {}
    for others in ("neighbor", "random"):
        run_dir = copy_run(prepared_run, tmp_path / others)
        option = [] if others == "neighbor" else ["--others", others]  # neighbor is the default
        invoke_ok("partition", run_dir, "-c", "16", "--init", "metis", *option)
        assert read_manifest(run_dir)["stages"]["partition"]["config"]["others"] == others
        share[others] = _share_of_others_reached(run_dir, adjacency)
    assert share["neighbor"] > 0.9 and share["random"] < 0.8
