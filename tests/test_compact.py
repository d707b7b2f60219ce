"""The compact serving form: exact where the model has no assignment, S H_meta where it has one,
t - 1 weights a row, narrow integer types, lower precision, and new users placed without training."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import TRAIN_OPTS, copy_run, invoke_ok

import legcf_core
from legcf_core.artifacts import RunDir, read_tensors
from legcf_core.assignment import fit_codes
from legcf_core.compact import (
    CompactForm,
    assignment_columns,
    form_arrays,
    form_from_arrays,
)
from legcf_core.errors import ConfigError
from legcf_core.model import node_outputs
from legcf_core.packing import bits_needed, index_dtype, read_uints
from legcf_core.stages import load_data, load_model
from legcf_core.stages.export_compact import export_compact


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, prepared_run):
    run_dir = copy_run(prepared_run, tmp_path_factory.mktemp("full") / "run")
    invoke_ok("pretrain", run_dir, "--embedding", "full", "--dim", 16, "--epochs", 2, *TRAIN_OPTS)
    invoke_ok("export", run_dir)
    return run_dir


def test_index_types_are_as_narrow_as_they_fit():
    assert index_dtype(255) == np.uint8 and index_dtype(256) == np.uint16
    assert index_dtype(40_980) == np.uint16 and index_dtype(65_536) == np.int32
    assert index_dtype(2**31) == np.int64


def test_s_as_columns_and_weights_pads_short_rows():
    assignment = sp.csr_matrix(np.array([[0.0, 0.7, 0.3], [1.0, 0.0, 0.0]], dtype=np.float32))
    columns, weights = assignment_columns(assignment, 2)
    np.testing.assert_array_equal(columns, [[1, 2], [0, 0]])
    np.testing.assert_allclose(weights, [[0.7, 0.3], [1.0, 0.0]])


def test_codes_recover_rows_made_of_two_meta_rows():
    """A row that is exactly a mix of two meta rows is found again, weights and all."""
    rng = np.random.default_rng(1)
    meta = torch.from_numpy(rng.normal(size=(30, 16)))
    columns = np.stack([rng.choice(30, 2, replace=False) for _ in range(50)])
    weights = rng.uniform(0.5, 2.0, size=(50, 2))
    rows = (torch.from_numpy(weights)[:, :, None] * meta[torch.from_numpy(columns)]).sum(1)
    found_columns, found_weights = fit_codes(rows, meta, 2, block_rows=16)
    rebuilt = (
        torch.from_numpy(found_weights).double()[:, :, None] * meta[torch.from_numpy(found_columns)]
    ).sum(1)
    torch.testing.assert_close(rebuilt, rows, rtol=1e-4, atol=1e-4)


def test_form_arrays_round_trip_in_narrow_types():
    rng = np.random.default_rng(0)
    form = CompactForm(
        rng.normal(size=(9, 4)).astype(np.float32),
        rng.integers(0, 9, (20, 3)),
        rng.normal(size=(20, 3)).astype(np.float32),
        None,
    )
    arrays = form_arrays(form, "float32")
    assert arrays["columns"].dtype == np.uint8 and arrays["weights"].shape == (20, 3)
    back = form_from_arrays(arrays, "float32", 20)
    np.testing.assert_array_equal(back.columns, form.columns)
    np.testing.assert_array_equal(back.weights, form.weights)
    np.testing.assert_array_equal(back.entity_rows(), form.entity_rows())


def test_a_table_without_assignment_serves_exactly(full_run, tmp_path):
    output = tmp_path / "compact.safetensors"
    export_compact(RunDir(full_run), output)
    compact, exact = legcf_core.load(output), legcf_core.load(full_run / "model.safetensors")
    users = exact.user_ids[:40]
    np.testing.assert_array_equal(compact.recommend(users, k=10)[0], exact.recommend(users, k=10)[0])


def test_legcf_compact_rows_fit_h_full_with_t_meta_rows(trained_run, tmp_path):
    run = RunDir(copy_run(trained_run, tmp_path / "run"))
    output = tmp_path / "compact.safetensors"
    result = export_compact(run, output)
    data = load_data(run)
    model = load_model(run, "auto", data.n_entities).model
    h = node_outputs(model, data.train, data.n_users, torch.device("cpu"))
    h_full, h_meta = h[: data.n_entities], h[data.n_entities :]
    served = legcf_core.load(output).embeddings()
    training_s = torch.from_numpy(model.layer.assignment.toarray()) @ h_meta

    def error(rows):
        return float(((rows - h_full).norm(dim=1) / h_full.norm(dim=1)).mean())

    # t fitted codes explain H_full better than training's S (S0, or refine's pooled codes, up to 2t)
    assert error(served) < 0.95 * error(training_s)
    tensors, _ = read_tensors(output, kind="compact")
    columns = read_uints(tensors, "columns", (data.n_entities, 2), upper=h_meta.shape[0] - 1)
    assert columns.shape == (data.n_entities, 2)
    assert tensors["columns.layout"][0] == bits_needed(h_meta.shape[0] - 1)  # bit-packed, no bit wasted
    assert result["params"] == h_meta.numel() + 2 * 2 * data.n_entities
    exact = legcf_core.load(run.path)
    users = exact.user_ids[:50]
    pairs = zip(exact.recommend(users, 20)[0], legcf_core.load(output).recommend(users, 20)[0], strict=True)
    assert np.mean([len(set(a) & set(b)) / 20 for a, b in pairs]) > 0.5


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_lower_precision_halves_the_rows_and_keeps_the_ranking_close(full_run, tmp_path, dtype):
    exact_path, low_path = tmp_path / "f32.safetensors", tmp_path / "low.safetensors"
    exact = export_compact(RunDir(full_run), exact_path)
    low = export_compact(RunDir(full_run), low_path, dtype=dtype)
    assert low["bytes"] < 0.75 * exact["bytes"]
    a, b = legcf_core.load(exact_path), legcf_core.load(low_path)
    users = a.user_ids[:40]
    pairs = zip(a.recommend(users, 10)[0], b.recommend(users, 10)[0], strict=True)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in pairs])
    assert overlap > 0.9


def test_without_seen_items_the_file_is_smaller_and_still_places_new_users(full_run, tmp_path):
    with_seen = export_compact(RunDir(full_run), tmp_path / "a.safetensors")
    without = export_compact(RunDir(full_run), tmp_path / "b.safetensors", keep_seen=False)
    assert without["bytes"] < with_seen["bytes"]
    served = legcf_core.load(tmp_path / "b.safetensors")
    items = list(served.item_ids[:3])
    picked, scores = served.recommend_for_items(items, k=5)
    assert len(picked) == 5 and not set(picked.tolist()) & set(items)
    assert np.all(np.diff(scores) <= 0)


def test_fold_in_of_a_trained_user_points_where_the_trained_row_does(full_run):
    """A user's fold-in from their own training items ranks like their trained row."""
    served = legcf_core.load(full_run / "model.safetensors")
    data = load_data(RunDir(full_run))
    agreements = []
    for user in range(20):
        items = data.item_ids[data.train[user].indices]
        folded = served.fold_in(list(items))
        trained = served.user_rows[user]
        agreements.append(float(torch.nn.functional.cosine_similarity(folded, trained, dim=0)))
    assert np.mean(agreements) > 0.5


def test_fold_in_refuses_empty_and_unknown_items(full_run):
    served = legcf_core.load(full_run / "model.safetensors")
    with pytest.raises(ConfigError, match="at least one item"):
        served.recommend_for_items([], k=5)
    with pytest.raises(ConfigError, match="not in the model"):
        served.recommend_for_items([-1], k=5)


def _corruptions(tensors, meta):
    """One change at a time to a real compact file's arrays or header."""
    yield "n_users", dict(tensors), {**meta, "n_users": "99999999"}
    yield "dtype", dict(tensors), {**meta, "dtype": "float8"}
    yield "no-weights", {k: v for k, v in tensors.items() if k != "weights"}, meta
    plain = {k: v for k, v in tensors.items() if not k.startswith(("columns.", "seen.counts."))}
    columns = read_uints(tensors, "columns", (None, None))
    columns[0, 0] = 250
    yield (
        "column-range",
        {**plain, "columns": columns, "seen.counts": read_uints(tensors, "seen.counts", (None,))},
        meta,
    )
    counts = read_uints(tensors, "seen.counts", (None,))
    counts[1] = 10**9
    yield (
        "counts",
        {**plain, "columns": read_uints(tensors, "columns", (None, None)), "seen.counts": counts},
        meta,
    )
    layout = tensors["columns.layout"].copy()
    layout[1] = 2**40
    yield "layout", {**tensors, "columns.layout": layout}, meta
    yield "weights-f64", {**tensors, "weights": tensors["weights"].astype(np.float64)}, meta
    yield "nan", {**tensors, "meta_rows": np.full_like(tensors["meta_rows"], np.nan)}, meta


def test_a_damaged_compact_file_is_one_line(trained_run, tmp_path):
    from helpers import assert_clean_error, invoke

    from legcf_core.artifacts import write_tensors

    run = copy_run(trained_run, tmp_path / "run")
    path = tmp_path / "compact.safetensors"
    export_compact(RunDir(run), path)
    tensors, meta = read_tensors(path, kind="compact")
    for name, bad_tensors, bad_meta in _corruptions(tensors, meta):
        bad = tmp_path / f"{name}.safetensors"
        write_tensors(bad, bad_tensors, bad_meta)
        assert_clean_error(invoke("recommend", bad, "--user", int(tensors.get("user_ids", [0])[0])), bad.name)


def test_a_version_1_compact_file_still_serves_the_same(trained_run, tmp_path):
    """Version 1 stored columns and row pointers byte-aligned, and the seen items without a shape."""
    from legcf_core.artifacts import write_tensors

    path = tmp_path / "compact.safetensors"
    export_compact(RunDir(copy_run(trained_run, tmp_path / "run")), path)
    tensors, meta = read_tensors(path, kind="compact")
    assert meta["format_version"] == "2"
    counts = read_uints(tensors, "seen.counts", (None,))
    old = {k: v for k, v in tensors.items() if not k.startswith(("columns", "seen."))}
    old["columns"] = read_uints(tensors, "columns", (None, None)).astype(np.uint16)
    old["seen.indptr"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    old["seen.indices"] = read_uints(tensors, "seen.indices", (None,)).astype(np.uint16)
    write_tensors(tmp_path / "v1.safetensors", old, {**meta, "format_version": "1"})
    now, then = legcf_core.load(path), legcf_core.load(tmp_path / "v1.safetensors")
    users = now.user_ids
    np.testing.assert_array_equal(now.recommend(users, k=10)[0], then.recommend(users, k=10)[0])


def test_refitting_the_meta_rows_rebuilds_the_rows_better():
    """Rows made of two rows of a dictionary, and a start 30% off it: rounds of refitting move the
    meta rows toward the dictionary, and the kept fit is never worse than the first."""
    from legcf_core.compact import fit_compact

    rng = np.random.default_rng(4)
    truth = torch.from_numpy(rng.normal(size=(20, 12)))
    columns = np.stack([rng.choice(20, 2, replace=False) for _ in range(400)])
    rows = (
        torch.from_numpy(rng.uniform(0.5, 2, (400, 2)))[:, :, None] * truth[torch.from_numpy(columns)]
    ).sum(1)
    start = truth + 0.3 * torch.from_numpy(rng.normal(size=(20, 12)))

    def error(rounds: int) -> float:
        meta, cols, weights = fit_compact(rows, start, 2, rounds)
        rebuilt = (
            torch.from_numpy(weights).double()[:, :, None] * torch.from_numpy(meta).double()[cols]
        ).sum(1)
        return float((rebuilt - rows).norm() / rows.norm())

    first, refitted = error(0), error(5)
    assert refitted < 0.6 * first, (first, refitted)
    assert error(1) <= first


def test_compact_options_without_compact_are_refused(trained_run):
    from helpers import assert_clean_error, invoke

    assert_clean_error(invoke("export", trained_run, "--fit-rounds", 1), "--compact")
