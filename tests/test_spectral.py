"""LEGCF started from the graph's spectral rows (``legcf_core.spectral``), coded as S and a
codebook by ``partition --init spectral`` and taken up by pretrain."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import (
    CODEBOOK,
    DIM,
    LAYERS,
    PER_ENTITY,
    SEED,
    assert_clean_error,
    copy_run,
    invoke,
    invoke_ok,
    read_manifest,
    tensor_file,
)

from legcf_core import spectral
from legcf_core.spectral import leading_singular, normalized_interactions, spectral_rows


def random_interactions(users: int, items: int, density: float, seed: int) -> sp.csr_matrix:
    matrix = sp.random(users, items, density=density, random_state=seed, format="csr")
    matrix.data[:] = 1.0
    return matrix


def test_normalization_is_symmetric_degree_scaling():
    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32))
    expected = np.array([[1 / np.sqrt(2 * 1), 1 / np.sqrt(2 * 2), 0], [0, 1 / np.sqrt(1 * 2), 0], [0, 0, 0]])
    np.testing.assert_allclose(normalized_interactions(r).toarray(), expected)


@pytest.mark.parametrize("gram_side", [10_000, 10], ids=["gram", "arpack"])
def test_leading_singular_triplets_match_a_dense_svd(monkeypatch, gram_side):
    monkeypatch.setattr(spectral, "GRAM_SIDE", gram_side)
    matrix = normalized_interactions(random_interactions(300, 120, 0.08, seed=1))
    u, sigma, v = leading_singular(matrix, 8, seed=0)
    dense = np.linalg.svd(matrix.toarray(), compute_uv=False)[:8]
    np.testing.assert_allclose(sigma, dense, atol=1e-8)
    assert (np.diff(sigma) <= 1e-12).all()
    np.testing.assert_allclose(matrix @ v, u * sigma, atol=1e-8)  # R~ v = sigma u, pair by pair
    np.testing.assert_allclose(u.T @ u, np.eye(8), atol=1e-8)


def test_fewer_triplets_than_asked_are_padded_with_zeros():
    matrix = normalized_interactions(random_interactions(9, 5, 0.5, seed=2))
    u, sigma, v = leading_singular(matrix, 8, seed=0)
    assert u.shape == (9, 8) and v.shape == (5, 8) and sigma.shape == (8,)
    assert (sigma[5:] == 0).all() and not u[:, 5:].any() and not v[:, 5:].any()


def test_spectral_rows_are_seeded_scaled_and_zero_for_entities_without_interactions():
    train = random_interactions(300, 120, 0.05, seed=3).tolil()
    train[7, :] = 0
    train = train.tocsr()
    rows = spectral_rows(train, 16, seed=4)
    assert rows.shape == (420, 16) and rows.dtype == np.float32
    assert not rows[7].any()
    assert abs(np.linalg.norm(rows, axis=1).mean() - 1.0) < 1e-5
    np.testing.assert_array_equal(rows, spectral_rows(train, 16, seed=4))
    with pytest.raises(ValueError, match="dim"):
        spectral_rows(train, 0)


def test_rows_rank_by_the_graph_before_any_training():
    # Two blocks of users and items: each user's dot products with the items rank its own
    # block's above the other's, as the leading singular pair separates the blocks.
    block = np.ones((20, 10))
    train = sp.csr_matrix(sp.block_diag([block, block]))
    rows = spectral_rows(train, 4, seed=0)
    users, items = rows[:40], rows[40:]
    scores = users @ items.T
    assert (scores[:20, :10].min(axis=1) > scores[:20, 10:].max(axis=1)).all()
    assert (scores[20:, 10:].min(axis=1) > scores[20:, :10].max(axis=1)).all()


def test_partition_codes_spectral_rows_and_pretrain_starts_from_them(tmp_path, prepared_run):
    run = copy_run(prepared_run, tmp_path / "run")
    args = ("-c", CODEBOOK, "-t", PER_ENTITY, "--dim", DIM, "--seed", SEED, "--init", "spectral")
    out = invoke_ok("partition", run, *args)
    assert "coding_error" in out.stdout
    tensors, meta = tensor_file(run / "assignment_init.safetensors")
    assert tensors["codebook"].shape == (CODEBOOK, DIM)
    assert meta["init"] == "spectral"
    metrics = read_manifest(run)["stages"]["partition"]["metrics"]
    assert 0 < metrics["coding_error"] < 1
    assert metrics["svd_seconds"] >= 0
    assert metrics["nonzeros"] <= tensors["parts"].size * PER_ENTITY
    again = copy_run(prepared_run, tmp_path / "again")
    invoke_ok("partition", again, *args)
    repeated, _ = tensor_file(again / "assignment_init.safetensors")
    np.testing.assert_array_equal(repeated["codebook"], tensors["codebook"])
    # A step too small to move anything: the pretrained codebook is the coded one.
    result = invoke_ok(
        "pretrain", run, "--layers", LAYERS, "--epochs", 1, "--batch-size", 4096, "--lr", "1e-9",
        "--seed", SEED, "--device", "cpu",
    )  # fmt: skip
    assert "coded from the graph's spectral rows" in result.stderr
    trained, _ = tensor_file(run / "pretrain.safetensors")
    np.testing.assert_allclose(trained["codebook"], tensors["codebook"], atol=1e-5)


def test_spectral_with_a_teacher_is_refused(tmp_path, prepared_run):
    run = copy_run(prepared_run, tmp_path / "run")
    result = invoke("partition", run, "--init", "spectral", "--teacher", tmp_path)
    assert_clean_error(result, "--init teacher")
