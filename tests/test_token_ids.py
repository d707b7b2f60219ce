"""String ids end to end: prepare -> partition -> pretrain (1 epoch) -> export -> recommend,
serve and fold-in, all answering in the dataset's own ids; and token arrays damaged on disk
are one error line, like every other array (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_clean_error, copy_run, invoke, invoke_ok, rewrite_tensors, tensor_file

import legcf_core
from legcf_core.errors import ArtifactError
from legcf_core.tokens import id_arrays, read_ids

USERS = [f"user {u}" for u in range(40)]  # spaces, so they need quoting nowhere but look like text
ITEMS = [f"é-{i:02d}" for i in range(50)]


@pytest.fixture(scope="module")
def token_run(tmp_path_factory) -> Path:
    """A run trained one epoch on a semicolon CSV with quoted string ids and ratings."""
    work = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(5)
    lines = ['"user";"item";"rating"']
    for user in USERS:
        lines += [
            f'"{user}";"{ITEMS[i]}";{rng.integers(1, 6)}' for i in rng.choice(len(ITEMS), 15, replace=False)
        ]
    data = work / "ratings.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = work / "run"
    invoke_ok("prepare", run, "--data", data, "--min-rating", "2", "--test-fraction", "0.4")
    invoke_ok("partition", run, "--codebook-size", "8")
    invoke_ok("pretrain", run, "--epochs", "1", "--dim", "8", "--device", "cpu")
    invoke_ok("export", run)
    invoke_ok("export", run, "--compact")
    return run


def recommended(*args) -> list[dict]:
    result = invoke_ok("recommend", *args, "--k", "5", "--json")
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_data_file_stores_tokens_not_integers(token_run):
    tensors, _ = tensor_file(token_run / "data.safetensors")
    assert "user_ids" not in tensors and tensors["user_ids.utf8"].dtype == np.uint8
    users = read_ids(tensors, "user_ids", tensors["user_ids.offsets"].size - 1)
    assert users.tolist() == sorted(USERS)


@pytest.mark.parametrize("source", ["run", "model.safetensors", "model.compact.safetensors"])
def test_recommend_answers_in_string_ids(token_run, source):
    where = token_run if source == "run" else token_run / source
    (answer,) = recommended(where, "--user", "user 3")
    assert answer["user"] == "user 3"
    assert len(answer["items"]) == 5 and set(answer["items"]) <= set(ITEMS)
    (new,) = recommended(where, "--items", f"{ITEMS[0]},{ITEMS[1]}")
    assert set(new["items"]) <= set(ITEMS) - {ITEMS[0], ITEMS[1]}
    assert_clean_error(invoke("recommend", where, "--user", "user 99"), "user ids not in the model: user 99")


def test_the_python_api_takes_and_gives_tokens(token_run):
    items, _ = legcf_core.load(token_run / "model.safetensors").recommend(["user 0", "user 1"], k=3)
    assert items.shape == (2, 3) and all(isinstance(v, str) for v in items.ravel())


def test_evaluate_per_user_writes_each_users_metrics_in_their_own_ids(token_run, tmp_path):
    import csv

    out = tmp_path / "per_user.csv"
    result = json.loads(invoke_ok("evaluate", token_run, "--per-user", out, "--json").stdout)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == result["users"] and result["per_user_file"] == str(out)
    assert all(row["user"].startswith("user ") for row in rows)  # the CSV's own ids, not indices
    for name in ("ndcg@20", "recall@10", "mrr@20"):
        assert np.mean([float(row[name]) for row in rows]) == pytest.approx(result[name], abs=1e-5)


def test_fold_in_adds_users_with_string_ids(token_run, tmp_path):
    new = tmp_path / "new.csv"
    new.write_text("user,item\nnewcomer," + ITEMS[2] + "\nnewcomer," + ITEMS[3] + "\nnewcomer,brand-new\n")
    out = tmp_path / "more.safetensors"
    invoke_ok("fold-in", token_run / "model.compact.safetensors", new, "-o", out)
    (answer,) = recommended(out, "--user", "newcomer")
    assert answer["user"] == "newcomer" and len(answer["items"]) == 5


def test_serve_takes_string_ids(token_run):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("httpx")
    from helpers import running_server

    with running_server(token_run / "model.safetensors") as client:
        answer = client.get("/recommend", params={"user": "user 4", "k": 3}).json()
        assert answer["user"] == "user 4" and set(answer["items"]) <= set(ITEMS)
        assert client.get("/recommend", params={"user": "nobody"}).status_code == 404
        posted = client.post("/recommend", json={"items": [ITEMS[5]], "k": 3}).json()
        assert set(posted["items"]) <= set(ITEMS)


# ------------------------------------------------------------- damaged tokens


def _offsets(change):
    def apply(tensors):
        offsets = tensors["item_ids.offsets"].copy()
        change(offsets)
        tensors["item_ids.offsets"] = offsets

    return apply


def _resorted(tensors):
    tokens = read_ids(tensors, "item_ids", tensors["item_ids.offsets"].size - 1)
    tensors.update(id_arrays("item_ids", tokens[::-1].copy()))


DAMAGE = {
    "offsets-decrease": (_offsets(lambda o: o.__setitem__(2, 0)), "item_ids.offsets"),
    "offsets-short-of-end": (_offsets(lambda o: o.__setitem__(-1, o[-1] - 1)), "item_ids.offsets"),
    "offsets-short": (
        lambda t: t.update({"item_ids.offsets": t["item_ids.offsets"][:-1]}),
        "item_ids.offsets",
    ),
    "not-utf8": (lambda t: t.update({"item_ids.utf8": np.full_like(t["item_ids.utf8"], 0xFF)}), "not UTF-8"),
    "unsorted": (_resorted, "not a sorted list"),
    "both-kinds": (lambda t: t.update({"item_ids": np.arange(50, dtype=np.int64)}), "both hold ids"),
    "bytes-float": (lambda t: t.update({"item_ids.utf8": t["item_ids.utf8"].astype(np.float32)}), "uint8"),
    "missing-bytes": (lambda t: t.pop("item_ids.utf8"), "item_ids.utf8"),
}


@pytest.mark.parametrize(("damage", "needle"), DAMAGE.values(), ids=list(DAMAGE))
def test_damaged_token_arrays_are_one_error_line(token_run, tmp_path, damage, needle):
    run = copy_run(token_run, tmp_path / "run")
    tensors, meta = tensor_file(run / "data.safetensors")
    damage(tensors)
    rewrite_tensors(run / "data.safetensors", tensors, meta)
    assert_clean_error(invoke("partition", run, "--codebook-size", "8"), "data.safetensors", needle)
    exported, meta = tensor_file(token_run / "model.safetensors")
    damage(exported)
    bad = rewrite_tensors(tmp_path / "model.safetensors", exported, meta)
    with pytest.raises(ArtifactError, match="model.safetensors"):
        legcf_core.load(bad)
