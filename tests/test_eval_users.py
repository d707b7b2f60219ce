"""--eval-users: scoring a seeded sample of users (large graphs), said in the output and the
manifest, the same sample for the same seed; and the note when LEGCF propagates explicitly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import TRAIN_OPTS, assert_clean_error, copy_run, invoke, invoke_ok, read_manifest

from legcf_core.evaluation import scored_users, users_per_block
from legcf_core.layers.codebook import operator_declined


def _evaluate(run_dir, *extra):
    result = invoke_ok("evaluate", run_dir, "--json", "--device", "cpu", *extra)
    return json.loads(result.stdout), result.stderr


def test_a_sample_is_said_in_the_output_and_manifest_and_fixed_by_its_seed(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path / "run")
    everyone, _ = _evaluate(run_dir)
    assert "sampled_from" not in everyone  # full ranking of every user stays the default
    first, stderr = _evaluate(run_dir, "--eval-users", 50, "--seed", 7)
    again, _ = _evaluate(run_dir, "--eval-users", 50, "--seed", 7)
    other, _ = _evaluate(run_dir, "--eval-users", 50, "--seed", 8)
    assert first["users"] == 50 and first["sampled_from"] == everyone["users"] and first["sample_seed"] == 7
    assert "note: scored a seeded sample of 50 of the" in stderr
    same = ("ndcg@20", "recall@20", "users")
    assert {k: first[k] for k in same} == {k: again[k] for k in same}
    assert first["ndcg@20"] != other["ndcg@20"]
    recorded = read_manifest(run_dir)["stages"]["evaluate"]["results"]
    entry = next(iter(v for k, v in recorded.items() if k.endswith("/test")))
    assert (entry["users"], entry["sampled_from"], entry["sample_seed"]) == (50, everyone["users"], 8)


def test_a_sample_as_large_as_the_users_scores_them_all(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path / "run")
    everyone, _ = _evaluate(run_dir)
    whole, stderr = _evaluate(run_dir, "--eval-users", 10**6)
    assert "sampled_from" not in whole and "sample" not in stderr
    assert whole["ndcg@20"] == everyone["ndcg@20"]


@pytest.mark.parametrize("command", ["evaluate", "pretrain", "refine"])
def test_a_sample_of_no_users_is_refused_in_one_line(trained_run, command):
    result = invoke(command, trained_run, "--eval-users", "0")
    assert_clean_error(result, "--eval-users")


def test_training_validates_on_the_sample_and_records_it(partitioned_run, tmp_path):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    args = ("pretrain", run_dir, "--dim", 8, "--layers", 1, "--epochs", 2, *TRAIN_OPTS)
    result = invoke_ok(*args, "--eval-users", 60)
    assert "validates on a seeded sample of 60 of the" in result.stderr
    entry = read_manifest(run_dir)["stages"]["pretrain"]
    assert entry["config"]["eval_users"] == 60
    sampled = [row["ndcg@20"] for row in entry["history"]]
    invoke_ok(*args, "--eval-users", 60)
    assert [row["ndcg@20"] for row in read_manifest(run_dir)["stages"]["pretrain"]["history"]] == sampled
    invoke_ok(*args)
    entry = read_manifest(run_dir)["stages"]["pretrain"]
    assert entry["config"]["eval_users"] is None
    assert [row["ndcg@20"] for row in entry["history"]] != sampled


def test_scored_users_is_a_seeded_sorted_subset():
    truth = sp.csr_matrix(np.eye(20, 30, dtype=np.float32))
    truth[3, 3] = 0
    truth.eliminate_zeros()
    assert scored_users(truth).tolist() == [u for u in range(20) if u != 3]
    sample = scored_users(truth, 5, seed=1)
    assert sample.size == 5 and np.all(np.diff(sample) > 0) and 3 not in sample
    np.testing.assert_array_equal(sample, scored_users(truth, 5, seed=1))


def test_evaluation_blocks_shrink_on_large_catalogues():
    assert users_per_block(40_981) == 1024
    assert users_per_block(200_000) * 200_000 <= 2**26
    assert users_per_block(10**9) == 1


def test_explicit_propagation_is_chosen_when_p_would_not_fit_in_memory():
    """The 20M-interaction graph at c = 500: P pays per step and fits in 24 GB, not in 8 GB."""
    n, nnz = 1_200_000, 32_000_000 + 4 * 1_200_000
    assert operator_declined(n, 500, 3, nnz, memory=24 * 10**9) is None
    reason = operator_declined(n, 500, 3, nnz, memory=8 * 10**9)
    assert reason is not None and "propagating explicitly" in reason


def test_pretrain_says_when_legcf_propagates_explicitly(prepared_run, tmp_path):
    """A codebook as large as the demo's entities: P costs more than propagation, and a note says so."""
    run_dir = copy_run(prepared_run, tmp_path / "run")
    invoke_ok("partition", run_dir, "-c", 1100, "--seed", 1, "--init", "metis")
    result = invoke_ok("pretrain", run_dir, "--dim", 4, "--layers", 1, "--epochs", 1, *TRAIN_OPTS)
    assert "note: c = 1,100 is large against the graph" in result.stderr
    assert "propagating explicitly" in result.stderr
