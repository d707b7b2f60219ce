"""``legcf serve`` as a client meets it: a real server process on 127.0.0.1 and a real
HTTP client, against the exact and the compact export of the trained demo run."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import free_port, invoke, invoke_ok, running_server

import legcf_core

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def compact_model(tmp_path_factory, trained_run) -> Path:
    output = tmp_path_factory.mktemp("serve") / "model.compact.safetensors"
    invoke_ok("export", trained_run, "--compact", "-o", output)
    return output


@pytest.fixture(scope="module", params=["exact", "compact"])
def server(request, exported_model, compact_model):
    """A running ``legcf serve`` on a free port: (base url, model path); stopped afterwards."""
    model = exported_model if request.param == "exact" else compact_model
    with running_server(model) as client:
        yield client, model, request.param


def test_health_names_the_model(server):
    client, model, form = server
    loaded = legcf_core.load(model)
    health = client.get("/health").json()
    assert health.pop("batches") >= 0 and health.pop("batched_users") >= 0
    assert health == {
        "status": "ok",
        "users": loaded.n_users,
        "items": loaded.n_items,
        "embedding": "legcf",
        "form": form,
    }


def test_known_users_get_what_the_python_api_gives(server):
    client, model, _ = server
    loaded = legcf_core.load(model)
    for user in [int(u) for u in loaded.user_ids[:: max(1, loaded.n_users // 5)]]:
        for k in (1, 20):
            answer = client.get("/recommend", params={"user": user, "k": k})
            assert answer.status_code == 200, answer.text
            items, scores = loaded.recommend([user], k=k)
            body = answer.json()
            assert body["user"] == user and body["items"] == items[0].tolist()
            assert body["scores"] == pytest.approx(scores[0].tolist(), abs=1e-5)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server):
    client, model, _ = server
    loaded = legcf_core.load(model)
    users = [int(u) for u in loaded.user_ids[:48]]
    before = client.get("/health").json()

    def ask(user: int) -> tuple[int, int, dict]:
        k = 1 + user % 7  # different k in one batch: each gets a prefix of the batch's top-k
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            return user, k, own.get("/recommend", params={"user": user, "k": k}).json()

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, users * 2))
    for user, k, body in answers:
        items, scores = loaded.recommend([user], k=k)
        assert body["user"] == user and body["items"] == items[0].tolist()
        assert body["scores"] == pytest.approx(scores[0].tolist(), abs=1e-5)
    after = client.get("/health").json()
    assert after["batched_users"] - before["batched_users"] == len(answers)
    assert after["batches"] - before["batches"] < len(answers)  # some requests shared a batch


def test_k_defaults_to_20(server):
    client, model, _ = server
    user = int(legcf_core.load(model).user_ids[0])
    assert len(client.get("/recommend", params={"user": user}).json()["items"]) == 20


def test_a_new_user_gets_what_fold_in_gives(server):
    client, model, _ = server
    loaded = legcf_core.load(model)
    items = [int(i) for i in loaded.item_ids[3:9]]
    answer = client.post("/recommend", json={"items": items, "k": 10})
    assert answer.status_code == 200, answer.text
    expected, scores = loaded.recommend_for_items(items, k=10)
    assert answer.json()["items"] == expected.tolist() and not set(answer.json()["items"]) & set(items)
    assert answer.json()["scores"] == pytest.approx(scores.tolist(), abs=1e-5)


def _unknown(loaded) -> int:
    return int(max(loaded.user_ids.max(), loaded.item_ids.max())) + 1000


def bad_requests(loaded) -> list[tuple[str, dict, int, str]]:
    """(method, request, status, a word the detail holds) for each kind of bad input."""
    user, item, too_many = int(loaded.user_ids[0]), int(loaded.item_ids[0]), loaded.n_items + 1
    return [
        ("GET", {"params": {"user": _unknown(loaded)}}, 404, "not in the model"),
        ("GET", {"params": {"user": "abc"}}, 422, "integer"),
        ("GET", {"params": {}}, 422, "missing"),
        ("GET", {"params": {"user": user, "k": 0}}, 422, "greater than or equal to 1"),
        ("GET", {"params": {"user": user, "k": too_many}}, 422, "catalogue"),
        ("POST", {"json": {"items": [item, _unknown(loaded)]}}, 404, "not in the model"),
        ("POST", {"json": {"items": []}}, 422, "at least 1"),
        ("POST", {"json": {"items": [item], "k": -3}}, 422, "greater than or equal to 1"),
        ("POST", {"json": {"items": [item], "k": too_many}}, 422, "catalogue"),
        ("POST", {"json": {"k": 5}}, 422, "missing"),
        ("POST", {"content": b'{"items": [1,', "headers": {"content-type": "application/json"}}, 422, "JSON"),
    ]


def test_bad_input_is_4xx_with_a_json_detail(server):
    client, model, _ = server
    for method, request, status, needle in bad_requests(legcf_core.load(model)):
        answer = client.request(method, "/recommend", **request)
        assert answer.status_code == status, (method, request, answer.text)
        detail = answer.json()["detail"]
        assert needle in (detail if isinstance(detail, str) else json.dumps(detail)), (request, detail)
    assert client.get("/health").status_code == 200  # still serving


def test_without_the_serve_extra_it_is_one_line(monkeypatch, exported_model):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "legcf_cli.serve", raising=False)
    result = invoke("serve", exported_model, "--port", free_port())
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "pip install 'legcf[serve]'" in result.stderr


def test_a_damaged_model_is_one_line_before_listening(tmp_path, exported_model):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(exported_model.read_bytes()[:300])
    result = invoke("serve", broken, "--port", free_port())
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "broken.safetensors" in result.stderr
