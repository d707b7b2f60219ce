"""c sized to the data when -c is not given: from a target compression (default 44, the
paper's Gowalla ratio) or a parameter budget, and said where it was chosen."""

from __future__ import annotations

import json

import pytest
from helpers import assert_clean_error, invoke, invoke_ok, read_manifest, tensor_file

from legcf_core.errors import ConfigError
from legcf_core.sizing import (
    choose_codebook,
    choose_init,
    choose_width,
    legcf_params,
    relative_cut,
    two_significant_floor,
)

GOWALLA = 29_858 + 40_981  # users + items of the LightGCN Gowalla split


def test_gowalla_default_is_the_papers_c_500():
    choice = choose_codebook(GOWALLA, 128, 2)
    assert choice.size == 500 and choice.rule == "compression"
    assert choice.params == 205_678 and choice.compression == pytest.approx(44.085, abs=1e-3)
    # 503 would also be >= 44x; two significant digits make it the paper's 500
    assert GOWALLA * 128 / legcf_params(GOWALLA, 128, 503, 2) >= 44


def test_narrower_meta_embeddings_buy_more_of_them_in_the_same_budget():
    # a LEGCF narrower than 128 is sized against the 128-d table it replaces: the paper's budget
    at_64 = choose_codebook(GOWALLA, 64, 2)
    assert at_64.size == 1000 and at_64.params == 205_678 and "44.1x smaller than the 128-d" in at_64.reason()
    assert choose_codebook(GOWALLA, 32, 2).size == 2000
    wider = choose_codebook(GOWALLA, 256, 2)  # a wider LEGCF is measured against its own width
    assert GOWALLA * 256 / wider.params >= 44 and wider.compression == pytest.approx(
        GOWALLA * 256 / wider.params
    )


@pytest.mark.parametrize(
    ("value", "expected"), [(503.1, 500), (68.7, 68), (99.99, 99), (100.0, 100), (1056.2, 1000), (2519, 2500)]
)
def test_two_significant_floor(value, expected):
    assert two_significant_floor(value) == expected


def test_every_sized_c_meets_its_target():
    for n in (1_185, 9_667, 20_000, GOWALLA, 500_000):
        for target in (10.0, 20.0, 44.0):
            choice = choose_codebook(n, 128, 2, compression=target)
            assert n * 128 / choice.params >= target
            bigger = choose_codebook(n, 128, 2, compression=target * 0.8)
            assert bigger.size >= choice.size


def test_budget_gives_the_largest_c_that_fits():
    choice = choose_codebook(GOWALLA, 128, 2, budget=205_678)
    assert choice.size == 500 and choice.rule == "budget"
    assert choose_codebook(GOWALLA, 128, 2, budget=205_677).size == 499
    with pytest.raises(ConfigError, match="fewer than t = 2") as caught:
        choose_codebook(GOWALLA, 128, 2, budget=141_678)  # N*t: no room for a codebook
    assert caught.value.field == "budget"


def test_explicit_target_out_of_reach_is_refused_default_falls_back():
    with pytest.raises(ConfigError, match="most LEGCF compresses here is") as caught:
        choose_codebook(GOWALLA, 64, 3, compression=44)
    assert caught.value.field == "compression"
    fallback = choose_codebook(GOWALLA, 64, 3)  # N*t alone is over N*128/44: sized as at d = 128, t = 2
    assert fallback.size == 500 and fallback.rule == "reference" and "out of reach" in fallback.reason()
    assert choose_codebook(GOWALLA, 128, 3).size == 500  # t = 3 keeps the paper's c too
    assert choose_codebook(100, 128, 2).size == 2  # tiny data: at least t


def test_given_c_is_kept():
    choice = choose_codebook(GOWALLA, 128, 2, codebook_size=321)
    assert choice.size == 321 and choice.rule == "given"


def test_partition_sizes_c_and_says_why(tmp_path, prepared_run):
    from helpers import copy_run

    run = copy_run(prepared_run, tmp_path / "run")
    out = invoke_ok("partition", run, "--dim", "128")
    assert "c = 8 from --compression 44" in out.stderr  # the demo: 1,185 entities
    entry = read_manifest(run)["stages"]["partition"]
    assert entry["config"]["codebook_size"] == 8 and entry["config"]["dim"] == 128
    assert entry["width"] == {"dim": 128, "chosen_by": "given"}
    assert (
        entry["codebook"]["chosen_by"] == "compression" and entry["codebook"]["params"] == 8 * 128 + 2 * 1185
    )
    _, meta = tensor_file(run / "assignment_init.safetensors")
    assert meta["codebook_size"] == "8" and meta["chosen_by"] == "compression"
    invoke_ok("partition", run, "--dim", "64")  # sized against the 128-d table: twice the codes
    assert read_manifest(run)["stages"]["partition"]["config"]["codebook_size"] == 16
    invoke_ok("partition", run, "--budget", "5000", "--dim", "128")
    assert read_manifest(run)["stages"]["partition"]["config"]["codebook_size"] == 20
    invoke_ok("partition", run, "--budget", "5000")  # d chosen from the data: 64 on the demo
    assert read_manifest(run)["stages"]["partition"]["config"]["codebook_size"] == (5000 - 2 * 1185) // 64
    invoke_ok("partition", run, "-c", "30")
    assert read_manifest(run)["stages"]["partition"]["codebook"]["chosen_by"] == "given"
    assert_clean_error(invoke("partition", run, "--compression", "70"), "--compression", "lower it")
    assert_clean_error(invoke("partition", run, "--compression", "20", "--budget", "9000"), "give one")


@pytest.mark.parametrize(
    ("edge_cut", "edges", "parts", "dim"),
    [
        (601_660, 810_128, 500, 64),  # Gowalla: 0.74 of a random partition's cut
        (618_967, 671_630, 68, 128),  # ml-1m: 0.94
        (5_089, 10_091, 8, 64),  # the demo: 0.58
        (60, 100, 3, 128),  # 60% cut into 3 parts is what chance gives (0.9): no communities
        (80, 100, 10**6, 128),  # exactly the threshold stays wide
        (0, 0, 8, 128),
        (-1, 100, 8, 128),
        (5, 100, 1, 128),
    ],
)
def test_width_and_start_follow_the_cut(edge_cut, edges, parts, dim):
    ratio = relative_cut(edge_cut, edges, parts)
    assert choose_width(ratio) == dim  # METIS anchors: narrow only on a graph of communities
    assert choose_init(ratio) == ("metis" if dim == 64 else "spectral")


def test_partition_chooses_d_from_metis_cut(tmp_path, prepared_run):
    from helpers import copy_run

    run = copy_run(prepared_run, tmp_path / "run")
    out = invoke_ok("partition", run)  # the demo is a graph of communities: METIS cuts about half
    assert "metis start at d = 64: METIS at c = 8 cuts" in out.stderr
    entry = read_manifest(run)["stages"]["partition"]
    width = entry["width"]
    assert width["dim"] == 64 and width["chosen_by"] == "edge_cut" and width["probe_codebook_size"] == 8
    assert width["probe_edge_cut"] > 0 and 0 < width["relative_cut"] < width["threshold"]
    assert entry["start"] == {
        "init": "metis",
        "chosen_by": "edge_cut",
        **{k: width[k] for k in width if k.startswith(("probe", "rel", "thr"))},
    }
    assert entry["config"]["init"] == "metis"
    assert entry["config"]["dim"] == 64 and entry["config"]["codebook_size"] == 16
    assert entry["codebook"]["params"] == 16 * 64 + 2 * 1185
    invoke_ok("partition", run, "-c", "30")  # c given: the paper's d
    entry = read_manifest(run)["stages"]["partition"]
    assert entry["config"]["dim"] == 128 and entry["width"]["chosen_by"] == "default"


def test_run_trains_at_the_d_partition_chose(tmp_path, demo_path):
    from helpers import TRAIN_OPTS

    epochs = ["--pretrain-epochs", "1", "--refine-epochs", "1"]
    invoke_ok("run", tmp_path / "run", "--data", demo_path, *epochs, *TRAIN_OPTS)
    stages = read_manifest(tmp_path / "run")["stages"]
    assert stages["partition"]["width"]["chosen_by"] == "edge_cut"
    assert stages["pretrain"]["config"]["dim"] == stages["partition"]["config"]["dim"] == 64
    invoke_ok("run", tmp_path / "full", "--data", demo_path, "--embedding", "full", *epochs, *TRAIN_OPTS)
    assert read_manifest(tmp_path / "full")["stages"]["pretrain"]["config"]["dim"] == 128


def test_partition_starts_spectral_without_communities(tmp_path):
    import numpy as np
    from helpers import write_lightgcn

    rng = np.random.default_rng(0)  # uniform random interactions: no community for METIS to find
    rows = {u: sorted(rng.choice(600, size=20, replace=False).tolist()) for u in range(2000)}
    tests = {u: sorted(set(rng.choice(600, size=5, replace=False).tolist()) - set(rows[u])) for u in rows}
    data = tmp_path / "data"
    write_lightgcn(data / "train.txt", rows)
    write_lightgcn(data / "test.txt", {u: t for u, t in tests.items() if t})
    invoke_ok("prepare", tmp_path / "run", "--data", data)
    out = invoke_ok("partition", tmp_path / "run")  # METIS anchors would be near random: spectral at 64
    entry = read_manifest(tmp_path / "run")["stages"]["partition"]
    start = entry["start"]
    assert start["init"] == "spectral" and start["relative_cut"] >= start["threshold"]
    assert entry["width"] == {"dim": 64, "chosen_by": "spectral"}
    assert entry["config"]["init"] == "spectral" and "no strong communities" in out.stderr
    out = invoke_ok("partition", tmp_path / "run", "--init", "metis")  # METIS anchors: 128 there
    entry = read_manifest(tmp_path / "run")["stages"]["partition"]
    assert entry["width"]["dim"] == 128 and entry["width"]["relative_cut"] >= entry["width"]["threshold"]
    assert entry["start"] == {"init": "metis", "chosen_by": "given"}
    assert entry["config"]["dim"] == 128 and "no strong communities" in out.stderr
    assert entry["config"]["codebook_size"] == entry["width"]["probe_codebook_size"]


def test_pretrain_trains_at_the_d_partition_sized_c_at(tmp_path, prepared_run):
    from helpers import TRAIN_OPTS, copy_run

    run = copy_run(prepared_run, tmp_path / "run")
    invoke_ok("partition", run, "--dim", "32")
    invoke_ok("pretrain", run, "--epochs", "1", *TRAIN_OPTS)
    entry = read_manifest(run)["stages"]["pretrain"]
    assert entry["config"]["dim"] == 32
    assert entry["metrics"]["params"] == read_manifest(run)["stages"]["partition"]["codebook"]["params"]
    invoke_ok("pretrain", run, "--epochs", "1", "--embedding", "full", *TRAIN_OPTS)
    assert read_manifest(run)["stages"]["pretrain"]["config"]["dim"] == 128  # a full table's default
    manifest = read_manifest(run)
    manifest["stages"]["partition"]["config"]["dim"] = "wide"
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = (run / "pretrain.safetensors").read_bytes()
    assert_clean_error(invoke("pretrain", run, "--epochs", "1", *TRAIN_OPTS), "partition", "d")
    assert (run / "pretrain.safetensors").read_bytes() == before


def test_prepare_names_the_default_c(tmp_path, demo_path):
    out = invoke_ok("prepare", tmp_path / "run", "--data", demo_path)
    assert "partition's default at d = 128" in out.stderr and "c = 8 from" in out.stderr
    assert read_manifest(tmp_path / "run")["dataset"]["default_codebook_size"] == 8


def test_inspect_says_which_c_and_why(trained_run):
    summary = json.loads(invoke_ok("inspect", trained_run, "--json").stdout)
    assert summary["partition"]["chosen_by"] == "given" and summary["partition"]["codebook_size"] == 50
    # partition's d (128 with -c); pretrain's --dim may train another, which "dim" reports
    assert summary["partition"]["width"] == {"dim": 128, "chosen_by": "default"}
    assert summary["partition"]["start"]["init"] == "metis"  # -c 50 on the demo: communities
