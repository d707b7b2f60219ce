"""legcf synth: seeded bytes, exact counts, the stated power laws, planted communities, a
dataset prepare reads, and one a model learns (it beats popularity)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, invoke, invoke_ok, snapshot
from hypothesis import given
from hypothesis import strategies as st

from legcf_core import stages
from legcf_core.artifacts import RunDir
from legcf_core.data import load_dataset
from legcf_core.evaluation import evaluate, popularity_scores
from legcf_core.readers.dataset import read_coded
from legcf_core.synth import ItemSampler, generate, lightgcn_bytes
from legcf_core.synth_config import SynthConfig

SMALL = SynthConfig(users=500, items=300, interactions=12_000, communities=6, seed=3)


def digest(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def pairs(directory) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train, test = read_coded([directory / "train.txt", directory / "test.txt"]).files  # integer ids
    return train.users, train.items, test.users, test.items


def tail_exponent(values: np.ndarray, xmin: int) -> float:
    """Maximum-likelihood power-law exponent of the values >= xmin (discrete approximation)."""
    x = values[values >= xmin].astype(np.float64)
    return 1.0 + x.size / np.log(x / (xmin - 0.5)).sum()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "small"
    generate(out, SMALL)
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, small):
    generate(tmp_path / "again", SMALL)
    assert digest(tmp_path / "again") == digest(small)
    generate(tmp_path / "other", SynthConfig(**{**SMALL.__dict__, "seed": 4}))
    assert digest(tmp_path / "other")["train.txt"] != digest(small)["train.txt"]


def test_counts_split_and_ids(small):
    train_u, train_i, test_u, test_i = pairs(small)
    users, items = np.r_[train_u, test_u], np.r_[train_i, test_i]
    assert users.size == SMALL.interactions
    assert np.unique(users * SMALL.items + items).size == users.size  # distinct pairs
    assert users.min() == 0 and users.max() == SMALL.users - 1 and np.unique(users).size == SMALL.users
    assert items.min() >= 0 and items.max() < SMALL.items
    per_user = np.bincount(users, minlength=SMALL.users)
    assert per_user.min() >= SMALL.min_per_user and per_user.max() <= SMALL.items // 2
    held = np.bincount(test_u, minlength=SMALL.users)
    assert np.array_equal(held, np.floor(SMALL.test_fraction * per_user + 1e-9).astype(int))
    assert held.min() >= 2  # every user has a validation and a test item
    summary = json.loads((small / "synth.json").read_text())
    assert summary["interactions"] == SMALL.interactions and summary["test"] == test_u.size
    data = load_dataset(small)
    assert (data.n_users, data.valid.nnz + data.test.nnz) == (SMALL.users, test_u.size)


def test_power_laws_hold_roughly(tmp_path):
    """Fitted tail exponents are near the requested ones (users exactly by construction,
    items through the community mixing)."""
    config = SynthConfig(
        users=20_000, items=4_000, interactions=400_000, user_exponent=2.5, item_exponent=2.0
    )
    generate(tmp_path, config)
    train_u, train_i, test_u, test_i = pairs(tmp_path)
    extra = np.bincount(np.r_[train_u, test_u]) - config.min_per_user
    assert tail_exponent(extra, 10) == pytest.approx(2.5, abs=0.15)
    degree = np.bincount(np.r_[train_i, test_i])
    assert tail_exponent(degree, int(np.quantile(degree, 0.5))) == pytest.approx(2.0, abs=0.3)


def test_draws_inside_a_community_stay_there():
    config = SynthConfig(users=100, items=1_000, interactions=2_000, communities=7)
    rng = np.random.default_rng(0)
    sampler = ItemSampler(config, rng)
    community = np.empty(config.items, dtype=np.int64)
    for group in range(config.communities):
        start, stop = np.searchsorted(sampler.cumulative, [sampler.low[group], sampler.high[group]], "right")
        community[sampler.order[start:stop]] = group
    groups = rng.integers(0, config.communities, 5_000)
    inside = sampler.draw(groups, np.ones(groups.size, dtype=bool), rng)
    assert np.array_equal(community[inside], groups)
    anywhere = sampler.draw(groups, np.zeros(groups.size, dtype=bool), rng)
    assert 0.05 < (community[anywhere] == groups).mean() < 0.3  # about 1/7 by chance


@given(st.lists(st.tuples(st.integers(0, 10**12), st.lists(st.integers(0, 10**7), min_size=1)), max_size=8))
def test_lines_match_python_formatting(rows):
    rows = sorted({u: i for u, i in rows}.items())
    users = np.array([u for u, items in rows for _ in items], dtype=np.int64)
    items = np.array([i for _, items in rows for i in items], dtype=np.int64)
    expected = "".join(f"{u} {' '.join(map(str, i))}\n" for u, i in rows).encode()
    assert lightgcn_bytes(users, items) == expected


def test_bad_settings_are_one_line_and_keep_files(tmp_path, small):
    result = invoke("synth", tmp_path / "x", "--users", "100", "--interactions", "500")
    assert_clean_error(result, "--interactions", "1,000")
    assert not (tmp_path / "x").exists()
    before = snapshot(small)
    assert_clean_error(invoke("synth", small, "--users", "50", "--interactions", "800"), "--force")
    assert snapshot(small) == before
    assert_clean_error(invoke("synth", tmp_path / "y", "--min-per-user", "5"), "--min-per-user", "10")


def test_a_tiny_synthetic_set_trains_to_beat_popularity(tmp_path):
    data = tmp_path / "data"
    invoke_ok(
        "synth", data, "--users", "300", "--items", "400", "--interactions", "9000", "--communities", "8"
    )
    result = invoke_ok(
        "run", tmp_path / "run", "--data", data, "-c", "32", "--dim", "32", "--batch-size", "1024",
        "--pretrain-epochs", "12", "--refine-epochs", "2", "--device", "cpu", "--json",
    )  # fmt: skip
    ndcg = json.loads(result.stdout)["ndcg@20"]
    prepared = stages.load_data(RunDir(tmp_path / "run"))
    popularity = torch.from_numpy(popularity_scores(prepared.train))[:, None]
    baseline = evaluate(torch.ones(prepared.n_users, 1), popularity, prepared.train, prepared.test)
    assert ndcg > 2 * baseline["ndcg@20"], (ndcg, baseline)
