"""What ``inspect`` reports, on a hand-made model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from legcf_core.inspection import anchors, describe, embedding_bytes, embedding_params


@pytest.fixture
def assignment() -> sp.csr_matrix:
    # 5 entities (2 users, 3 items), c = 4 meta-embeddings; number 3 is never used.
    dense = np.array(
        [
            [0.7, 0.3, 0.0, 0.0],
            [0.0, 0.4, 0.6, 0.0],
            [0.5, 0.0, 0.5, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.2, 0.8, 0.0, 0.0],
        ],
        dtype=np.float32,
    )
    return sp.csr_matrix(dense)


def test_params_and_bytes(assignment):
    assert embedding_params((4, 6), assignment) == 4 * 6 + 9
    # float32 codebook + int64 indptr (N+1) + int32 indices and float32 data per nonzero.
    assert embedding_bytes((4, 6), assignment) == 4 * 24 + 8 * 6 + (4 + 4) * 9


def test_anchors_are_the_heaviest_meta_embedding(assignment):
    rows = sp.vstack([assignment, sp.csr_matrix((1, 4), dtype=np.float32)]).tocsr()
    np.testing.assert_array_equal(anchors(rows), [0, 2, 0, 0, 1, -1])


def test_describe(assignment):
    summary = describe((4, 6), assignment, n_users=2)
    assert summary["entities"] == 5 and summary["users"] == 2 and summary["items"] == 3
    assert summary["dim"] == 6 and summary["meta_embeddings"] == 4
    assert summary["per_entity"] == 2
    assert summary["params"] == 33
    # Against the 128-d table a narrower LEGCF replaces (sizing.reference_width), not a 6-d one.
    assert summary["full_table_dim"] == 128
    assert summary["full_table_params"] == 5 * 128
    assert summary["compression_ratio"] == round(5 * 128 / 33, 2)
    # The bytes view counts S's indices and row pointers too: fewer times smaller.
    assert summary["compression_ratio_bytes"] == round(4 * 5 * 128 / summary["bytes"], 2)
    assert summary["compression_ratio_bytes"] < summary["compression_ratio"]
    assert summary["nnz"] == 9
    assert summary["nonzeros_per_row"] == {"1": 1, "2": 4}
    assert summary["meta_embeddings_used"] == 3 and summary["meta_embeddings_unused"] == 1
    assert summary["anchors_used"] == 3  # anchors: 0, 2, 0, 0, 1
    assert summary["entities_per_anchor"]["max"] == 3.0
    assert summary["row_weight_sums"]["min"] == pytest.approx(1.0)
    assert summary["row_weight_sums"]["max"] == pytest.approx(1.0)
    assert summary["weights"]["max"] == pytest.approx(1.0) and summary["weights"]["min"] == pytest.approx(0.2)


def test_known_anchors_break_equal_weight_ties(assignment):
    # Row 2 weighs meta-embeddings 0 and 2 equally; the partition says its anchor is 2.
    parts = np.array([0, 2, 2, 0, 1])
    summary = describe((4, 6), assignment, n_users=2, known_anchors=parts)
    assert summary["anchors_used"] == 3
    assert summary["entities_per_anchor"]["max"] == 2.0
    by_argmax = describe((4, 6), assignment, n_users=2)
    assert by_argmax["anchors_used"] == 3  # argmax: 0, 2, 0, 0, 1
    assert by_argmax["entities_per_anchor"]["max"] == 3.0


def test_run_inspect_counts_metis_parts_as_anchors(trained_run):
    from legcf_core import artifacts as art
    from legcf_core.stages import inspect_path

    run = art.RunDir(trained_run)
    parts = art.read_tensors(run.file(art.PARTITION_FILE))[0]["parts"]
    summary = inspect_path(trained_run, which="pretrain")  # S is S0 here
    assert summary["anchors_used"] == len(np.unique(parts))
    assert summary["entities_per_anchor"]["max"] == np.bincount(parts).max()
