"""Every setting's range lives in the config dataclasses; a stage checks them before it writes."""

from __future__ import annotations

import math

import pytest
from helpers import assert_clean_error, copy_run, invoke, snapshot

from legcf_core.config import (
    MAX_SEED,
    PartitionConfig,
    PrepareConfig,
    PretrainConfig,
    RefineConfig,
    TrainConfig,
)
from legcf_core.errors import ConfigError


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (TrainConfig(lr_decay=math.nan), "lr_decay"),
        (TrainConfig(lr_decay=math.inf), "lr_decay"),
        (TrainConfig(lr_decay=-1.0), "lr_decay"),
        (TrainConfig(lr_decay=0.0), "lr_decay"),
        (TrainConfig(lr_decay=1.5), "lr_decay"),
        (TrainConfig(seed=-1), "seed"),
        (TrainConfig(seed=2**64), "seed"),
        (TrainConfig(lr=math.nan), "lr"),
        (TrainConfig(epochs=0), "epochs"),
        (PrepareConfig(seed=-1), "seed"),
        (PrepareConfig(seed=MAX_SEED + 1), "seed"),
        (PrepareConfig(test_fraction=0.0), "test_fraction"),
        (PrepareConfig(test_fraction=1.0), "test_fraction"),
        (PrepareConfig(test_fraction=math.nan), "test_fraction"),
        (PartitionConfig(seed=-1), "seed"),
        (PartitionConfig(codebook_size=0), "codebook_size"),
        (PartitionConfig(per_entity=0), "per_entity"),
        (PartitionConfig(codebook_size=3, per_entity=4), "per_entity"),
        (PartitionConfig(anchor_weight=math.nan), "anchor_weight"),
        (PartitionConfig(anchor_weight=1.0, per_entity=2), "anchor_weight"),
        (PartitionConfig(others="nearest"), "others"),
        (PretrainConfig(dim=0), "dim"),
        (PretrainConfig(dim=10**6), "dim"),
        (PretrainConfig(layers=-1), "layers"),
        (PretrainConfig(layers=1000), "layers"),
        (PretrainConfig(budget=0), "budget"),
        (PretrainConfig(train=TrainConfig(lr_decay=0.0)), "lr_decay"),
        (RefineConfig(update_every=0), "update_every"),
    ],
)
def test_out_of_range_settings_name_their_field(config, field):
    with pytest.raises(ConfigError) as caught:
        config.check()
    assert caught.value.field == field
    assert caught.value.render({field: "--FLAG"}).startswith("--FLAG ")


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(),
        TrainConfig(lr_decay=1.0, seed=0),
        TrainConfig(seed=MAX_SEED),
        PrepareConfig(),
        PrepareConfig(seed=MAX_SEED, test_fraction=0.5),
        PartitionConfig(),
        PartitionConfig(codebook_size=1, per_entity=1, anchor_weight=1.0),
        PretrainConfig(),
        RefineConfig(),
    ],
)
def test_defaults_and_edges_pass(config):
    config.check()


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_prepare_checks_its_seed_before_touching_the_run(tmp_path, prepared_run, seed):
    fresh = tmp_path / "fresh"
    assert_clean_error(invoke("prepare", fresh, "--seed", seed), "--seed")
    assert "0<=x<=4294967295" in invoke("prepare", "--help").stdout.replace(" ", "")
    assert not fresh.exists()
    run_dir = copy_run(prepared_run, tmp_path / "run")
    before = snapshot(run_dir)
    assert_clean_error(invoke("prepare", run_dir, "--seed", seed), "--seed")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("decay", ["nan", "inf", "-1", "0"])
def test_lr_decay_is_checked_before_training(tmp_path, partitioned_run, decay):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    before = snapshot(run_dir)
    result = invoke("pretrain", run_dir, "--lr-decay", decay, "--epochs", "1", "--device", "cpu")
    assert_clean_error(result, "--lr-decay")
    assert snapshot(run_dir) == before


def test_run_checks_every_setting_before_writing(tmp_path):
    fresh = tmp_path / "fresh"
    result = invoke("run", fresh, "--lr-decay", "-1", "--device", "cpu")
    assert_clean_error(result, "--lr-decay")
    assert not fresh.exists()
