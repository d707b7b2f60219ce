"""The assignment update: the closed form S <- top-t(H_full pinv(H_meta)) (Eq. 14-16),
with negative weights clipped and rows renormalized to sum 1, and matching pursuit
(``--solver pursuit``), with least-squares weights clipped at 0."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import TRAIN_OPTS, copy_run, invoke, invoke_ok, operator_model, read_manifest, snapshot

from legcf_core.artifacts import read_tensors
from legcf_core.assignment import update_assignment
from legcf_core.graph import bipartite_adjacency


def planted_assignment(n: int, c: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """Dense N x c S* with t nonzeros per row, each >= 0.1, summing to 1."""
    S = np.zeros((n, c))
    for p in range(n):
        cols = rng.choice(c, size=t, replace=False)
        S[p, cols] = 0.1 + (1 - 0.1 * t) * rng.dirichlet(np.ones(t))
    return S


def well_conditioned(c: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """c x d with orthonormal rows (c <= d), scaled; condition number 1."""
    q, _ = np.linalg.qr(rng.normal(size=(d, c)))
    return 2.0 * q.T


def some_previous(n: int, c: int, t: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(planted_assignment(n, c, t, rng).astype(np.float32))


def as_rows(matrix: sp.csr_matrix) -> list[dict[int, float]]:
    matrix = matrix.tocsr()
    return [
        dict(
            zip(
                matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]].tolist(),
                matrix.data[matrix.indptr[r] : matrix.indptr[r + 1]].tolist(),
                strict=True,
            )
        )
        for r in range(matrix.shape[0])
    ]


@pytest.mark.parametrize(
    ("n", "c", "d", "t", "block_rows"),
    [(40, 8, 16, 3, 8192), (50, 10, 10, 2, 7), (33, 6, 32, 1, 5), (25, 12, 20, 4, 8192)],
)
def test_recovers_planted_assignment(n, c, d, t, block_rows):
    rng = np.random.default_rng(n + c + d + t)
    S_star = planted_assignment(n, c, t, rng)
    H_meta = well_conditioned(c, d, rng)
    H_full = S_star @ H_meta
    updated, kept = update_assignment(
        torch.from_numpy(H_full.astype(np.float32)),
        torch.from_numpy(H_meta.astype(np.float32)),
        some_previous(n, c, t, seed=99),
        t,
        block_rows=block_rows,
    )
    assert kept == 0
    assert updated.shape == (n, c)
    assert np.all(np.diff(updated.indptr) == t)
    for row, got in enumerate(as_rows(updated)):
        assert set(got) == set(np.flatnonzero(S_star[row]).tolist()), f"row {row}"
    np.testing.assert_allclose(updated.toarray(), S_star, atol=2e-5)
    np.testing.assert_allclose(np.asarray(updated.sum(axis=1)).ravel(), 1.0, atol=1e-5)


def test_recovers_planted_assignment_with_generic_h_meta():
    # A random Gaussian H_meta (full row rank, not orthonormal) works as well.
    rng = np.random.default_rng(1)
    n, c, d, t = 60, 9, 24, 3
    S_star = planted_assignment(n, c, t, rng)
    H_meta = rng.normal(size=(c, d))
    assert np.linalg.cond(H_meta) < 10
    updated, kept = update_assignment(
        torch.from_numpy((S_star @ H_meta).astype(np.float32)),
        torch.from_numpy(H_meta.astype(np.float32)),
        some_previous(n, c, t, seed=5),
        t,
    )
    assert kept == 0
    np.testing.assert_allclose(updated.toarray(), S_star, atol=1e-4)


def test_negative_weights_clipped_rows_renormalized_and_empty_rows_kept():
    rng = np.random.default_rng(2)
    c, d, t = 4, 6, 3
    raw = np.array(
        [
            [0.6, 0.3, -0.1, -0.5],  # top-3 = 0.6, 0.3, -0.1 -> clip -> [2/3, 1/3, 0]
            [1.2, 0.6, 0.2, -1.0],  # all top-3 positive -> rescaled to [0.6, 0.3, 0.1]
            [-0.1, -0.2, -0.3, -0.4],  # top-3 all negative -> keep the previous row
            [0.1, 0.5, 0.2, 0.3],  # sums to 1 already (top-3 = cols 1, 3, 2)
            [-0.5, -0.05, -0.3, -0.2],  # all negative -> keep the previous row
        ]
    )
    expected = np.array(
        [
            [2 / 3, 1 / 3, 0, 0],
            [0.6, 0.3, 0.1, 0],
            [np.nan] * 4,
            [0, 0.5 / 1.0, 0.2, 0.3],
            [np.nan] * 4,
        ]
    )
    H_meta = well_conditioned(c, d, rng)
    previous = sp.csr_matrix(
        np.array(
            [
                [0.5, 0.5, 0, 0],
                [0, 0.5, 0.5, 0],
                [0.25, 0, 0, 0.75],
                [0, 0, 0.5, 0.5],
                [0.4, 0.1, 0.5, 0],
            ],
            dtype=np.float32,
        )
    )
    updated, kept = update_assignment(
        torch.from_numpy((raw @ H_meta).astype(np.float32)),
        torch.from_numpy(H_meta.astype(np.float32)),
        previous,
        t,
    )
    assert kept == 2
    dense = updated.toarray()
    for row in (0, 1, 3):
        np.testing.assert_allclose(dense[row], expected[row], atol=1e-5)
        assert dense[row].sum() == pytest.approx(1.0, abs=1e-5)
        assert (dense[row] >= 0).all()
    # Row 0's clipped weight is dropped, not stored as an explicit zero.
    assert as_rows(updated)[0].keys() == {0, 1}
    np.testing.assert_array_equal(dense[2], previous.toarray()[2])
    np.testing.assert_array_equal(dense[4], previous.toarray()[4])


def test_model_update_matches_slow_reference():
    """OperatorModel.update_assignment against a numpy pinv / top-t / clip / renormalize loop."""
    rng = np.random.default_rng(3)
    n_users, n_items, c, d, t, layers = 8, 12, 5, 7, 2, 2
    R = (rng.random((n_users, n_items)) < 0.4).astype(np.float32)
    n = n_users + n_items
    S0 = planted_assignment(n, c, t, rng).astype(np.float32)
    model = operator_model(
        bipartite_adjacency(sp.csr_matrix(R)),
        n_users,
        sp.csr_matrix(S0),
        torch.from_numpy(rng.normal(size=(c, d)).astype(np.float32)),
        t,
        layers,
        torch.device("cpu"),
    )
    with torch.no_grad():
        H_full = model.entity_embeddings().double().numpy()
        H_meta = model.meta_embeddings().double().numpy()
    dense = H_full @ np.linalg.pinv(H_meta)
    expected = np.zeros((n, c))
    expected_kept = 0
    for p in range(n):
        top = np.argsort(-dense[p])[:t]
        w = np.clip(dense[p, top], 0, None)
        if w.sum() <= 0:
            expected[p] = S0[p]
            expected_kept += 1
        else:
            expected[p, top] = w / w.sum()
    model.layer.solver = "pinv"
    kept = model.update_assignment()
    assert kept == expected_kept
    np.testing.assert_allclose(model.assignment.toarray(), expected, atol=1e-4)
    assert not np.allclose(expected, S0, atol=1e-3)  # the update did change S

    # The operator was rebuilt for the new S: H equals a fresh model's on the new assignment.
    fresh = operator_model(
        bipartite_adjacency(sp.csr_matrix(R)),
        n_users,
        model.assignment,
        model.codebook.detach(),
        t,
        layers,
        torch.device("cpu"),
    )
    with torch.no_grad():
        np.testing.assert_allclose(
            model.entity_embeddings().numpy(), fresh.entity_embeddings().numpy(), rtol=1e-6, atol=1e-7
        )


def _solve(h_full: np.ndarray, h_meta: np.ndarray, t: int, solver: str, previous: sp.csr_matrix):
    return update_assignment(
        torch.from_numpy(h_full.astype(np.float32)),
        torch.from_numpy(h_meta.astype(np.float32)),
        previous,
        t,
        solver,
        block_rows=16,
    )


def test_pursuit_recovers_planted_codes_at_their_scale():
    rng = np.random.default_rng(7)
    n, c, d, t = 50, 12, 16, 2
    s_star = planted_assignment(n, c, t, rng) * rng.uniform(0.5, 3.0, size=(n, 1))  # rows not summing to 1
    h_meta = rng.normal(size=(c, d))
    previous = some_previous(n, c, t, seed=3)
    updated, kept = _solve(s_star @ h_meta, h_meta, t, "pursuit", previous)
    assert kept == 0 and np.all(np.diff(updated.indptr) == t)
    np.testing.assert_allclose(updated.toarray(), s_star, atol=1e-4)
    by_pinv, _ = _solve(s_star @ h_meta, h_meta, t, "pinv", previous)
    assert not np.allclose(by_pinv.toarray(), s_star, atol=1e-2)  # pinv's rows are made to sum 1


def test_pursuit_rebuilds_a_wide_codebook_closer_than_pinv():
    # c > d, as in every real run (c = 500, d = 128): the pseudo-inverse spreads each row over
    # all c meta-embeddings, and its top t rebuild the row far worse than t fitted together.
    rng = np.random.default_rng(8)
    n, c, d, t = 200, 40, 16, 2
    h_meta = rng.normal(size=(c, d))
    h_full = planted_assignment(n, c, t, rng) @ h_meta + 0.05 * rng.normal(size=(n, d))
    previous = some_previous(n, c, t, seed=4)
    errors = {}
    for solver in ("pinv", "pursuit"):
        updated, _ = _solve(h_full, h_meta, t, solver, previous)
        errors[solver] = np.linalg.norm(updated @ h_meta - h_full) / np.linalg.norm(h_full)
    assert errors["pursuit"] < 0.5 * errors["pinv"], errors


def test_pursuit_keeps_rows_whose_weights_are_all_negative():
    rng = np.random.default_rng(9)
    h_meta = well_conditioned(4, 6, rng)
    h_full = np.stack([-h_meta[0], 0.7 * h_meta[2]])  # row 0 is only reached by a negative weight
    previous = sp.csr_matrix(np.array([[0, 1.0, 0, 0], [0, 0, 0, 1.0]], dtype=np.float32))
    updated, kept = _solve(h_full, h_meta, 1, "pursuit", previous)
    assert kept == 1
    assert as_rows(updated)[0] == {1: 1.0}
    assert as_rows(updated)[1] == {2: pytest.approx(0.7, abs=1e-5)}


def test_refine_with_pursuit_records_it_and_keeps_s_sparse_and_nonnegative(tmp_path, trained_run):
    run = copy_run(trained_run, tmp_path / "run")
    before = snapshot(run)
    assert invoke("refine", run, "--solver", "lstsq", *TRAIN_OPTS).exit_code == 2
    assert snapshot(run) == before
    invoke_ok("refine", run, "--solver", "pursuit", "--epochs", "2", *TRAIN_OPTS)
    entry = read_manifest(run)["stages"]["refine"]
    assert entry["config"]["solver"] == "pursuit" and entry["rows_kept_at_update"][0] >= 0
    arrays = read_tensors(run / "refine.safetensors")[0]
    s = sp.csr_matrix((arrays["assignment.data"], arrays["assignment.indices"], arrays["assignment.indptr"]))
    per_entity = int(read_tensors(run / "refine.safetensors")[1]["per_entity"])
    assert np.diff(s.indptr).max() <= per_entity and s.data.min() >= 0


def test_pooled_gives_codes_to_the_rows_that_need_them_within_n_t_weights():
    # Two rows in three are one meta-embedding each, the rest a mix of four: at t = 2 a row,
    # pursuit cannot rebuild the mixes; pooled moves the codes the simple rows do not need to
    # them, which is exactly enough (80 + 40 * 4 = 120 * 2).
    rng = np.random.default_rng(10)
    n, c, d, t = 120, 30, 32, 2
    simple_rows = 2 * n // 3
    h_meta = well_conditioned(c, d, rng)
    simple = np.eye(c)[rng.integers(0, c, simple_rows)] * rng.uniform(0.5, 2.0, size=(simple_rows, 1))
    mixed = planted_assignment(n - simple_rows, c, 2 * t, rng)
    h_full = np.vstack([simple, mixed]) @ h_meta
    previous = some_previous(n, c, t, seed=5)
    errors, solved = {}, {}
    for solver in ("pursuit", "pooled"):
        solved[solver], kept = _solve(h_full, h_meta, t, solver, previous)
        errors[solver] = np.linalg.norm(solved[solver] @ h_meta - h_full) / np.linalg.norm(h_full)
        assert kept == 0
    pooled = solved["pooled"]
    widths = np.diff(pooled.indptr)
    assert pooled.nnz <= n * t and widths.min() >= 1 and widths.max() <= 2 * t
    assert widths[:simple_rows].max() == 1 and widths[simple_rows:].min() == 2 * t
    assert pooled.data.min() >= 0
    assert errors["pooled"] < 1e-3 < errors["pursuit"], errors


def test_refine_pools_codes_by_default_and_records_it(tmp_path, trained_run):
    run = copy_run(trained_run, tmp_path / "run")
    invoke_ok("refine", run, "--epochs", "2", *TRAIN_OPTS)
    entry = read_manifest(run)["stages"]["refine"]
    assert entry["config"]["solver"] == "pooled"
    arrays, header = read_tensors(run / "refine.safetensors")
    s = sp.csr_matrix((arrays["assignment.data"], arrays["assignment.indices"], arrays["assignment.indptr"]))
    t = int(header["per_entity"])
    assert s.nnz <= s.shape[0] * t and np.diff(s.indptr).max() <= 2 * t and s.data.min() >= 0
