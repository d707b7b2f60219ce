"""Fold-in through ``legcf fold-in``: new users and items join a compact model without training,
land where trained entities of the same taste are, and bad input changes no file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, copy_run, invoke, invoke_ok, snapshot, write_pairs

import legcf_core
from legcf_core.artifacts import RunDir
from legcf_core.stages import load_data


@pytest.fixture(scope="module")
def compact(tmp_path_factory, trained_run):
    run = copy_run(trained_run, tmp_path_factory.mktemp("fold") / "run")
    path = run.parent / "compact.safetensors"
    invoke_ok("export", run, "--compact", "-o", path)
    return path, load_data(RunDir(run))


def test_a_refolded_trained_user_ranks_like_the_trained_one(compact, tmp_path):
    """A copy of a trained user under a new id, folded in from its training items, gets the
    trained user's top items back (the planted truth: the same taste)."""
    path, data = compact
    served = legcf_core.load(path)
    overlaps, own, nearer = [], [], []
    for user in range(10):
        items = data.item_ids[data.train[user].indices]
        pairs = tmp_path / f"user{user}.csv"
        write_pairs(pairs, [(10_000_000 + user, int(i)) for i in items])
        output = tmp_path / f"folded{user}.safetensors"
        invoke_ok("fold-in", path, pairs, "-o", output)
        folded = legcf_core.load(output)
        mine = folded.recommend([10_000_000 + user], k=20)[0][0]
        theirs = served.recommend([int(data.user_ids[user])], k=20)[0][0]
        overlaps.append(len(set(mine) & set(theirs)) / 20)
        rows = torch.nn.functional.normalize(folded.user_rows, dim=1)
        cosines = rows[:-1] @ rows[-1]  # the folded row against every trained user's row
        own.append(float(cosines[user]))
        nearer.append(float((cosines < cosines[user]).float().mean()))  # trained users it is closer to
    assert np.mean(overlaps) > 0.5
    # it lands where its trained row is: nearer to it than to most trained users (chance: half)
    assert np.mean(own) > 0.8 and np.mean(nearer) > 0.75, (np.mean(own), np.mean(nearer))


def test_new_items_come_in_with_their_users_and_everything_else_is_kept(compact, tmp_path):
    path, data = compact
    pairs = tmp_path / "new.csv"
    known = [int(i) for i in data.item_ids[:3]]
    write_pairs(
        pairs,
        [
            (5_000_005, known[0]),
            (5_000_005, 777_777),
            (5_000_006, known[1]),
            (5_000_006, 777_777),
            (int(data.user_ids[0]), known[2]),
        ],
    )
    output = tmp_path / "out.safetensors"
    result = json.loads(invoke_ok("fold-in", path, pairs, "-o", output, "--json").stdout)
    assert (result["new_users"], result["new_items"], result["pairs_skipped"]) == (2, 1, 1)
    before, after = legcf_core.load(path), legcf_core.load(output)
    assert 777_777 in after.item_ids and {5_000_005, 5_000_006} <= set(after.user_ids.tolist())
    users = before.user_ids[:20]
    np.testing.assert_array_equal(before.score(users, before.item_ids), after.score(users, before.item_ids))
    assert known[0] not in after.recommend([5_000_005], k=10)[0][0]  # their own items are left out


@pytest.mark.parametrize(
    ("rows", "needles"),
    [
        ([(0, 5)], ["no user the model does not already have"]),
        ([(9_000_009, 123_456_789)], ["at least one item"]),
    ],
    ids=["only-known-users", "only-new-items"],
)
def test_pairs_that_cannot_be_placed_are_one_line(compact, tmp_path, rows, needles):
    path, data = compact
    rows = [(u if u else int(data.user_ids[0]), i) for u, i in rows]
    pairs = write_pairs(tmp_path / "bad.csv", rows)
    before = snapshot(path.parent)
    assert_clean_error(invoke("fold-in", path, pairs, "-o", tmp_path / "x.safetensors"), *needles)
    assert snapshot(path.parent) == before and not (tmp_path / "x.safetensors").exists()


def test_an_exact_export_is_refused_with_the_way_out(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    invoke_ok("export", run)
    pairs = write_pairs(tmp_path / "p.csv", [(-1, 1)])
    assert_clean_error(invoke("fold-in", run / "model.safetensors", pairs, "-o", tmp_path / "o"), "--compact")
