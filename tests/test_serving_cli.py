"""``legcf recommend`` and ``legcf export --compact`` through the real CLI on the trained demo run."""

from __future__ import annotations

import json

import pytest
from helpers import assert_clean_error, copy_run, invoke, invoke_ok, snapshot

import legcf_core


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, trained_run):
    run = copy_run(trained_run, tmp_path_factory.mktemp("serving") / "run")
    invoke_ok("export", run)
    return run


def test_recommend_prints_one_json_object_a_user_in_raw_ids(run_dir, tmp_path):
    model = legcf_core.load(run_dir / "model.safetensors")
    users = [int(u) for u in model.user_ids[:3]]
    listed = tmp_path / "users.txt"
    listed.write_text(f"{users[2]}\n\n")
    out = invoke_ok(
        "recommend",
        run_dir / "model.safetensors",
        "--user",
        users[0],
        "--user",
        users[1],
        "--users",
        listed,
        "--k",
        7,
        "--json",
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["user"] for line in lines] == users
    expected = model.recommend(users, k=7)[0]
    for line, items in zip(lines, expected, strict=True):
        assert line["items"] == items.tolist() and len(line["scores"]) == 7


def test_recommend_for_a_new_user_leaves_their_items_out(run_dir):
    model = legcf_core.load(run_dir)
    items = [int(i) for i in model.item_ids[:4]]
    out = invoke_ok("recommend", run_dir, "--items", ",".join(map(str, items)), "--k", 5, "--json").stdout
    answer = json.loads(out)
    assert answer["user"] == "new" and len(answer["items"]) == 5 and not set(answer["items"]) & set(items)


def test_compact_export_is_smaller_and_serves(run_dir):
    exact = json.loads(invoke_ok("export", run_dir, "--json").stdout)
    compact = json.loads(invoke_ok("export", run_dir, "--compact", "--dtype", "float16", "--json").stdout)
    assert compact["bytes"] < exact["bytes"] and compact["form"] == "compact"
    out = invoke_ok(
        "recommend", compact["path"], "--user", int(legcf_core.load(run_dir).user_ids[0]), "--json"
    )
    assert len(json.loads(out.stdout)["items"]) == 20


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (["--user", "-424242"], ["not in the model", "-424242"]),
        (["--items", "-7"], ["not in the model"]),
        (["--items", ""], ["at least one item"]),
    ],
    ids=["unknown-user", "unknown-item", "no-items"],
)
def test_bad_requests_are_one_line_and_change_nothing(run_dir, options, needles):
    before = snapshot(run_dir)
    assert_clean_error(invoke("recommend", run_dir / "model.safetensors", *options), *needles)
    assert snapshot(run_dir) == before


def test_a_damaged_model_file_is_one_line(run_dir, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((run_dir / "model.safetensors").read_bytes()[:500])
    assert_clean_error(invoke("recommend", broken, "--user", 0), "broken.safetensors")


def test_usage_errors_exit_2(run_dir):
    assert invoke("recommend", run_dir / "model.safetensors", "--k", 0, "--user", 0).exit_code == 2
    assert invoke("recommend", run_dir / "model.safetensors").exit_code == 2
    assert invoke("export", run_dir, "--dtype", "float16").exit_code == 2
    # Ids may be text (tokens), so 'x' is an id this model does not know, not a usage error.
    assert "item ids not in the model: 1, x" in assert_clean_error(
        invoke("recommend", run_dir / "model.safetensors", "--items", "1,x")
    )


def test_inspect_reads_a_compact_file(run_dir, tmp_path):
    path = tmp_path / "c.safetensors"
    invoke_ok("export", run_dir, "--compact", "--dtype", "bfloat16", "--no-seen", "-o", path)
    summary = json.loads(invoke_ok("inspect", path, "--json").stdout)
    assert summary["source"] == "compact" and summary["dtype"] == "bfloat16" and not summary["seen_items"]
    assert summary["file_bytes"] == path.stat().st_size > sum(summary["tensor_bytes"].values())
    assert summary["codes"] == 2 and summary["users"] == legcf_core.load(run_dir).n_users
