"""The evaluation protocol: how test is held out (random, latest per user, the dataset's
own files), where validation comes from (test-third, train-fraction, none), what each
stage does under each, and the errors for a dataset too small to split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import (
    TRAIN_OPTS,
    assert_clean_error,
    copy_run,
    invoke,
    invoke_ok,
    read_manifest,
    snapshot,
    tensor_file,
    write_pairs,
)

import legcf_core
from legcf_core.artifacts import RunDir
from legcf_core.data import holdout_split, load_dataset
from legcf_core.errors import DataError
from legcf_core.splits import holdout_mask, seen_before
from legcf_core.stages import load_data

TINY = ["--dim", "16", "--layers", "1", "-c", "20", *TRAIN_OPTS]


def old_holdout(users, items, fraction, seed):
    """legcf's holdout before the time split existed, kept here to pin its draw."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(users.size), users))
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, users.size])
    rank = np.arange(users.size) - np.repeat(starts, counts)
    is_test = rank < np.repeat(np.floor(fraction * counts).astype(np.int64), counts)
    return users[~is_test], items[~is_test], users[is_test], items[is_test]


def pairs_of(users, items):
    return sorted(zip(users.tolist(), items.tolist(), strict=True))


@pytest.mark.parametrize("seed", [0, 7, 2024])
def test_random_holdout_draws_what_it_always_drew(seed):
    rng = np.random.default_rng(seed + 100)
    users = rng.integers(0, 30, 600)
    items = rng.permutation(600)
    new, old = holdout_split(users, items, 0.25, seed), old_holdout(users, items, 0.25, seed)
    for a, b in ((0, 1), (2, 3)):
        assert pairs_of(new[a], new[b]) == pairs_of(old[a], old[b])


def test_time_holdout_takes_each_users_latest():
    users = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    items = np.arange(15)
    times = np.array([5, 1, 9, 3, 7, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    _, _, test_users, test_items = holdout_split(users, items, 0.4, seed=3, times=times)
    assert pairs_of(test_users, test_items) == [(0, 2), (0, 4), (1, 11), (1, 12), (1, 13), (1, 14)]


def test_time_holdout_breaks_ties_by_seed_and_keeps_counts():
    users = np.repeat(np.arange(4), 10)
    times = np.zeros(40)  # every time equal: the draw decides, per seed
    mask_a = holdout_mask(users, 0.3, np.random.default_rng(1), times)
    mask_b = holdout_mask(users, 0.3, np.random.default_rng(1), times)
    assert (mask_a == mask_b).all()
    assert np.bincount(users[mask_a]).tolist() == [3, 3, 3, 3]


def timed_csv(path, n_users=30, per_user=12):
    """user,item,time rows: user u's item (u + k) % 40 at time 100*k + u (later k, later time)."""
    rows = ["user,item,time"]
    for u in range(n_users):
        for k in range(per_user):
            rows.append(f"{u},{(u + k) % 40},{100 * k + u}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_prepare_split_time_holds_out_the_latest(tmp_path):
    data = timed_csv(tmp_path / "timed.csv")
    invoke_ok("prepare", tmp_path / "run", "--data", data, "--split", "time", "--validation", "none")
    tensors, meta = tensor_file(tmp_path / "run" / "data.safetensors")
    assert meta["split"] == "time" and meta["validation"] == "none"
    loaded = load_dataset(data, split="time", validation="none")
    for user in range(30):  # floor(0.2 * 12) = 2: the items at k = 10 and 11
        raw = loaded.item_ids[loaded.test[user].indices].tolist()
        assert sorted(raw) == sorted([(user + 10) % 40, (user + 11) % 40])
    manifest = read_manifest(tmp_path / "run")
    assert manifest["stages"]["prepare"]["config"]["split"] == "time"


def test_split_choices_that_do_not_fit_the_data_are_refused(tmp_path, small_dataset):
    plain = write_pairs(tmp_path / "plain.csv", [(u, i) for u in range(10) for i in range(10)])
    run = tmp_path / "run"
    assert_clean_error(invoke("prepare", run, "--data", plain, "--split", "time"), "third column (time)")
    assert_clean_error(invoke("prepare", run, "--data", small_dataset, "--split", "time"), "directory")
    assert_clean_error(invoke("prepare", run, "--data", plain, "--split", "files"), "--split files")
    assert_clean_error(invoke("prepare", run, "--data", plain, "--valid-fraction", "0.2"), "train-fraction")
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,5\n1,3,soon\n")
    assert_clean_error(invoke("prepare", run, "--data", bad, "--split", "time"), "bad.csv:2", "time")
    assert not run.exists()


def test_default_prepare_writes_no_protocol_fields(prepared_run):
    """The paper's protocol adds nothing to the data file's header, so it stays byte-identical
    to files written before the choice existed, and such files read as test-third."""
    _, meta = tensor_file(prepared_run / "data.safetensors")
    assert set(meta) == {"format", "format_version", "kind", "dataset", "n_users", "n_items"}
    prepare = read_manifest(prepared_run)["stages"]["prepare"]
    assert prepare["config"]["validation"] == "test-third" and prepare["config"]["split"] == "files"


def test_train_fraction_carves_validation_from_training(tmp_path, demo_path):
    run = tmp_path / "run"
    out = invoke_ok(
        "prepare", run, "--data", demo_path, "--validation", "train-fraction", "--valid-fraction", "0.2"
    )
    _, meta = tensor_file(run / "data.safetensors")
    assert meta["validation"] == "train-fraction" and meta["valid_fraction"] == "0.2"
    default = load_dataset(demo_path)
    carved = load_dataset(demo_path, validation="train-fraction", valid_fraction=0.2)
    assert carved.train.multiply(carved.valid).nnz == 0 and carved.test.multiply(carved.valid).nnz == 0
    assert carved.train.nnz + carved.valid.nnz == default.train.nnz  # training, split in two
    assert carved.test.nnz == default.test.nnz + default.valid.nnz  # the whole test set is scored
    assert "train-fraction" in out.stdout
    # testing leaves out what validation held (known before test); validating leaves out training
    assert seen_before(carved.train, carved.valid, "train-fraction", "test").nnz == default.train.nnz
    assert seen_before(carved.train, carved.valid, "test-third", "test").nnz == carved.train.nnz


def test_train_fraction_run_validates_and_scores_every_test_item(tmp_path, demo_path):
    run = tmp_path / "run"
    invoke_ok("prepare", run, "--data", demo_path, "--validation", "train-fraction")
    invoke_ok("partition", run, "-c", "20")
    invoke_ok("pretrain", run, "--epochs", "2", "--dim", "16", "--layers", "1", *TRAIN_OPTS)
    result = json.loads(invoke_ok("evaluate", run, "--split", "valid", "--json").stdout)
    assert result["validation"] == "train-fraction" and result["users"] > 0
    test = json.loads(invoke_ok("evaluate", run, "--split", "test", "--json").stdout)
    assert test["users"] == 400  # every demo user has test items, none went to validation
    assert read_manifest(run)["stages"]["pretrain"]["metrics"]["ndcg@20"] == pytest.approx(
        result["ndcg@20"], abs=1e-6
    )
    # serving leaves out what a user had before test: training and the validation carved from it
    invoke_ok("export", run, "-o", tmp_path / "exact.safetensors")
    invoke_ok("export", run, "--compact", "-o", tmp_path / "compact.safetensors")
    data = load_data(RunDir(run))
    known = data.seen_before("test")
    from_run = legcf_core.load(run)
    users = data.user_ids
    for served in (
        from_run,
        legcf_core.load(tmp_path / "exact.safetensors"),
        legcf_core.load(tmp_path / "compact.safetensors"),
    ):
        top = served.recommend(users, k=20)[0]
        index = {raw: i for i, raw in enumerate(data.item_ids.tolist())}
        for row, items in enumerate(top):
            assert not {index[i] for i in items.tolist()} & set(known[row].indices.tolist())
    np.testing.assert_array_equal(
        legcf_core.load(tmp_path / "exact.safetensors").recommend(users, k=20)[0],
        from_run.recommend(users, k=20)[0],
    )


def test_validation_none_trains_fixed_epochs_and_keeps_the_last(tmp_path, demo_path):
    run = tmp_path / "run"
    prepared = invoke_ok("prepare", run, "--data", demo_path, "--validation", "none")
    assert "no validation split" in prepared.stderr
    invoke_ok("partition", run, "-c", "20")
    # patience 1 would stop a validated run early; without validation every epoch runs
    out = invoke_ok(
        "pretrain", run, "--epochs", "3", "--patience", "1", "--dim", "16", "--layers", "1", *TRAIN_OPTS
    )
    assert "kept its last model (epoch 3)" in out.stderr
    refined = invoke_ok("refine", run, "--epochs", "2", "--patience", "1", *TRAIN_OPTS)
    assert "keeps its last model (epoch 2)" in refined.stderr
    manifest = read_manifest(run)
    pretrain, refine = manifest["stages"]["pretrain"], manifest["stages"]["refine"]
    assert pretrain["config"]["lr_schedule"] == "plateau"  # constant lr without validation
    assert pretrain["metrics"]["best_epoch"] == 3 and pretrain["metrics"]["ndcg@20"] is None
    assert [row["ndcg@20"] for row in pretrain["history"]] == [None, None, None]
    assert refine["kept"] == "refine" and refine["improved"] is None and refine["metrics"]["best_epoch"] == 2
    assert pretrain["config"]["validation"] == refine["config"]["validation"] == "none"
    before = snapshot(run)
    assert_clean_error(invoke("evaluate", run, "--split", "valid"), "--validation none", "--split test")
    assert snapshot(run) == before
    test = json.loads(invoke_ok("evaluate", run, "--json").stdout)
    assert test["users"] == 400 and test["model"] == "refine" and test["trained_by"] == "refine"
    summary = invoke_ok("inspect", run, "--json")
    assert json.loads(summary.stdout)["partition"]["chosen_by"] == "given"


def sixty_users(path, per_user=8):
    """The issue's dataset: 60 users with 8 interactions each."""
    return write_pairs(path, [(u, (u * 7 + k) % 90) for u in range(60) for k in range(per_user)])


def test_too_small_to_split_says_which_split_and_what_to_change(tmp_path):
    data = sixty_users(tmp_path / "sixty.csv")
    run = tmp_path / "run"
    line = assert_clean_error(invoke("run", run, "--data", data, *TINY), "empty test split")
    assert "--validation train-fraction" in line and "--validation test-third" in line
    assert not (run / "data.safetensors").exists()
    line = assert_clean_error(
        invoke("prepare", run, "--data", data, "--validation", "train-fraction"), "empty validation split"
    )
    assert "--valid-fraction" in line and "--validation none" in line
    with pytest.raises(DataError, match="empty test split"):
        load_dataset(data, test_fraction=0.1)  # floor(0.8) = 0 items held out a user


def test_too_small_for_test_third_runs_with_train_fraction_and_none(tmp_path):
    data = sixty_users(tmp_path / "sixty.csv")
    for validation, extra in (("none", []), ("train-fraction", ["--valid-fraction", "0.2"])):
        run = tmp_path / validation
        result = invoke_ok(
            "run", run, "--data", data, "--validation", validation, *extra,
            "--pretrain-epochs", "2", "--refine-epochs", "1", "--json", *TINY,
        )  # fmt: skip
        metrics = json.loads(result.stdout)
        assert metrics["users"] == 60 and metrics["validation"] == validation


def test_test_third_notes_users_left_untested(tmp_path):
    # 10 users with 5 interactions: each holds out one item, which test-third sends to validation
    rows = [(u, (u + k) % 30) for u in range(10) for k in range(5)]
    rows += [(u, (u + k) % 30) for u in range(10, 20) for k in range(20)]
    data = write_pairs(tmp_path / "mixed.csv", rows)
    out = invoke_ok("prepare", tmp_path / "run", "--data", data)
    assert "10 of 20 users" in out.stderr and "train-fraction" in out.stderr


def test_compare_tables_show_a_dash_without_validation():
    from legcf_cli.compare_report import _valid
    from legcf_core.experiments.sets import NO_OVERRIDES, SETS, Overrides, run_name
    from legcf_core.experiments.summary import validation_scores

    manifest = {
        "stages": {
            "pretrain": {"metrics": {"ndcg@20": None}},
            "refine": {"kept": "refine", "metrics": {"ndcg@20": None}},
        }
    }
    assert validation_scores(manifest) == {"pretrain": None, "auto": None}
    assert _valid({"valid_ndcg@20": None}) == "—" and _valid({"valid_ndcg@20": 0.12345}) == "0.1235"
    experiment = SETS["table2"][0]
    # runs under another protocol get their own directories, so results never mix
    assert run_name(experiment, 1, Overrides(validation="none")) != run_name(experiment, 1, NO_OVERRIDES)


def test_a_cosine_schedule_is_recorded_and_a_bad_one_refused(tmp_path, partitioned_run):
    run = copy_run(partitioned_run, tmp_path / "run")
    before = snapshot(run)
    assert invoke("pretrain", run, "--lr-schedule", "linear", *TRAIN_OPTS).exit_code == 2
    assert snapshot(run) == before
    invoke_ok("pretrain", run, "--epochs", "2", "--lr-schedule", "cosine", *TRAIN_OPTS)
    assert read_manifest(run)["stages"]["pretrain"]["config"]["lr_schedule"] == "cosine"
