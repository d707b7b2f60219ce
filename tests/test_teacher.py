"""LEGCF started from a teacher: a trained table coded as S and a codebook
(``legcf_core.table_coding``), written by ``partition --teacher`` and taken up by pretrain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    CODEBOOK,
    DIM,
    LAYERS,
    PER_ENTITY,
    SEED,
    TRAIN_OPTS,
    assert_clean_error,
    copy_run,
    invoke,
    invoke_ok,
    read_manifest,
    rewrite_tensors,
    snapshot,
    tensor_file,
)

from legcf_core.artifacts import sha256_file
from legcf_core.partition import rows_to_csr
from legcf_core.table_coding import code_table


def planted_table(n: int = 600, c: int = 24, d: int = 16, t: int = 2, seed: int = 0):
    """A table that is exactly S M for a known S (t codes a row, weights > 0) and M."""
    rng = np.random.default_rng(seed)
    meta = rng.standard_normal((c, d))
    columns = np.stack([rng.choice(c, t, replace=False) for _ in range(n)])
    weights = rng.uniform(0.5, 1.5, size=(n, t))
    return torch.from_numpy(rows_to_csr(columns, weights, c).astype(np.float64) @ meta)


def test_coding_fits_better_with_rounds_within_the_budget():
    table = planted_table()
    one = code_table(table, 24, 2, rounds=1, seed=3)
    many = code_table(table, 24, 2, rounds=15, seed=3)
    assert many.relative_error < one.relative_error
    assert many.relative_error < 0.5
    for code in (one, many):
        assert code.assignment.shape == (600, 24)
        assert code.assignment.nnz <= 600 * 2  # pooled: N t weights, shared among the rows
        assert (code.assignment.data >= 0).all()
        assert code.codebook.shape == (24, 16) and code.codebook.dtype == torch.float32
    again = code_table(table, 24, 2, rounds=15, seed=3)
    assert (again.assignment != many.assignment).nnz == 0
    assert torch.equal(again.codebook, many.codebook)


def test_coding_revives_meta_embeddings_no_row_uses():
    # Half the rows are zero (entities the teacher never moved): codes that start on them fit
    # nothing, go unused, and are revived on rows the code fits worst, until all three
    # directions of the other rows are coded exactly.
    rng = np.random.default_rng(1)
    directions = np.repeat(rng.standard_normal((3, 8)), 40, axis=0) * rng.uniform(1, 2, size=(120, 1))
    table = torch.from_numpy(np.concatenate([directions, np.zeros((120, 8))]))
    code = code_table(table, 6, 1, rounds=5, seed=0)
    assert code.revived > 0
    assert code.relative_error < 1e-6


def test_coding_refuses_impossible_sizes():
    with pytest.raises(ValueError, match="t <= c <= N"):
        code_table(torch.zeros(5, 4), 6, 2)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, prepared_run):
    """A full table trained briefly on the demo data: the teacher."""
    run = copy_run(prepared_run, tmp_path_factory.mktemp("teacher") / "run")
    invoke_ok(
        "pretrain", run, "--embedding", "full", "--dim", DIM, "--layers", LAYERS, "--epochs", 2, *TRAIN_OPTS
    )
    return run


def test_partition_codes_the_teacher_and_pretrain_starts_from_it(tmp_path, prepared_run, teacher_run):
    run = copy_run(prepared_run, tmp_path / "run")
    out = invoke_ok(
        "partition",
        run,
        "-c",
        CODEBOOK,
        "-t",
        PER_ENTITY,
        "--dim",
        DIM,
        "--seed",
        SEED,
        "--teacher",
        teacher_run,
    )
    assert "coding_error" in out.stdout
    tensors, meta = tensor_file(run / "assignment_init.safetensors")
    assert tensors["codebook"].shape == (CODEBOOK, DIM)
    assert meta["init"] == "teacher"
    entry = read_manifest(run)["stages"]["partition"]
    assert entry["teacher"]["model_sha256"] == sha256_file(teacher_run / "pretrain.safetensors")
    assert entry["teacher"]["embedding"] == "full"
    assert 0 < entry["metrics"]["coding_error"] < 1
    n = tensors["parts"].size
    assert entry["metrics"]["nonzeros"] <= n * PER_ENTITY
    # A step too small to move anything: the pretrained codebook is the coded one.
    invoke_ok(
        "pretrain",
        run,
        "--layers",
        LAYERS,
        "--epochs",
        1,
        "--batch-size",
        4096,
        "--lr",
        "1e-9",
        "--seed",
        SEED,
        "--device",
        "cpu",
    )
    trained, _ = tensor_file(run / "pretrain.safetensors")
    np.testing.assert_allclose(trained["codebook"], tensors["codebook"], atol=1e-5)


def test_a_teacher_of_other_data_is_refused_and_nothing_is_lost(tmp_path, small_dataset, teacher_run):
    run = tmp_path / "run"
    invoke_ok("prepare", run, "--data", small_dataset, "--seed", SEED)
    before = snapshot(run)
    result = invoke("partition", run, "-c", 4, "--teacher", teacher_run)
    assert_clean_error(result, "teacher", "dataset")
    assert snapshot(run) == before


def test_teacher_options_must_agree(tmp_path, prepared_run, teacher_run):
    run = copy_run(prepared_run, tmp_path / "run")
    assert_clean_error(invoke("partition", run, "--init", "teacher"), "--teacher")
    assert_clean_error(
        invoke("partition", run, "--init", "random", "--teacher", teacher_run), "--init teacher"
    )
    assert_clean_error(
        invoke("partition", run, "-c", CODEBOOK, "--dim", 16, "--teacher", teacher_run), "--dim 32"
    )
    assert_clean_error(invoke("partition", run, "--teacher", run), "teacher")


def test_a_mangled_starting_codebook_is_one_clear_error(tmp_path, prepared_run, teacher_run):
    run = copy_run(prepared_run, tmp_path / "run")
    invoke_ok("partition", run, "-c", CODEBOOK, "--dim", DIM, "--seed", SEED, "--teacher", teacher_run)
    path = run / "assignment_init.safetensors"
    tensors, meta = tensor_file(path)
    tensors["codebook"] = tensors["codebook"][:, :-1].copy()
    rewrite_tensors(path, tensors, meta)
    result = invoke("pretrain", run, "--layers", LAYERS, "--epochs", 1, *TRAIN_OPTS)
    assert_clean_error(result, "codebook")
    tensors["codebook"] = np.full((CODEBOOK, DIM), np.nan, dtype=np.float32)
    rewrite_tensors(path, tensors, meta)
    assert_clean_error(invoke("pretrain", run, "--layers", LAYERS, "--epochs", 1, *TRAIN_OPTS), "infinite")
