"""The model in use: ``legcf_core.load`` and ``Recommender`` on a trained demo run.

Recommendations must be what full-ranking evaluation ranks: the top-k unseen
items by score, best first, in the dataset's own ids; a recall computed from
them equals ``legcf evaluate``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke_ok

import legcf_core
from legcf_core.artifacts import RunDir
from legcf_core.errors import ConfigError
from legcf_core.stages import load_data


@pytest.fixture(scope="module")
def served(exported_model):
    return legcf_core.load(exported_model)


def test_recommendations_are_the_best_unseen_items_in_raw_ids(served, trained_run):
    data = load_data(RunDir(trained_run))
    users = data.user_ids[:25]
    items, scores = served.recommend(users, k=10)
    assert items.shape == scores.shape == (25, 10)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    item_index = {int(raw): i for i, raw in enumerate(data.item_ids)}
    every = served.score(users, data.item_ids)
    for row, user in enumerate(range(25)):
        seen = set(data.train[user].indices.tolist())
        picked = [item_index[int(i)] for i in items[row]]
        assert not seen & set(picked)  # training items are never recommended
        unseen = np.array([i for i in range(data.n_items) if i not in seen])
        best = unseen[np.argsort(-every[row, unseen], kind="stable")[:10]]
        np.testing.assert_allclose(np.sort(every[row, picked]), np.sort(every[row, best]), rtol=1e-5)
        np.testing.assert_allclose(scores[row], every[row, picked], rtol=1e-5)


def test_recall_from_recommendations_matches_evaluate(served, trained_run):
    data = load_data(RunDir(trained_run))
    evaluated = json.loads(invoke_ok("evaluate", trained_run, "--json", "--device", "cpu").stdout)
    tested = np.flatnonzero(np.diff(data.test.indptr) > 0)
    items, _ = served.recommend(data.user_ids[tested], k=20)
    item_index = {int(raw): i for i, raw in enumerate(data.item_ids)}
    recalls = []
    for row, user in enumerate(tested):
        truth = set(data.test[user].indices.tolist())
        hits = sum(item_index[int(i)] in truth for i in items[row])
        recalls.append(hits / len(truth))
    assert np.mean(recalls) == pytest.approx(evaluated["recall@20"], abs=1e-6)


def test_a_run_directory_serves_like_its_export_for_every_user(served, trained_run):
    """Parity: the exact export recommends what the run directory does, same items, same order."""
    from_run = legcf_core.load(trained_run)
    users = from_run.user_ids
    np.testing.assert_array_equal(from_run.recommend(users, k=20)[0], served.recommend(users, k=20)[0])


def test_seen_items_come_back_when_asked(served, trained_run):
    data = load_data(RunDir(trained_run))
    user = int(np.argmax(np.diff(data.train.indptr)))
    items, _ = served.recommend([data.user_ids[user]], k=served.n_items, exclude_seen=False)
    assert set(data.item_ids[data.train[user].indices]) <= set(items[0].tolist())


def test_unknown_ids_and_bad_k_are_clear_errors(served):
    with pytest.raises(ConfigError, match="not in the model"):
        served.recommend([-12345], k=5)
    with pytest.raises(ConfigError, match="k must be >= 1"):
        served.recommend(served.user_ids[:1], k=0)


def test_the_readme_python_example_runs(exported_model):
    """The README's Python API block, run as written against an exported demo model."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "legcf_core.load(" in block
    namespace: dict = {}
    exec(block.replace('"runs/demo/model.safetensors"', repr(str(exported_model))), namespace)
    items, scores = namespace["items"], namespace["scores"]
    assert items.shape == scores.shape == (2, 10)
