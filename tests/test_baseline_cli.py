"""The --embedding and --backbone options through the stage commands: what each
stage accepts, the clean errors, and exported baselines scoring like their runs."""

from __future__ import annotations

import json

import pytest
from helpers import assert_clean_error, copy_run, invoke, invoke_ok, snapshot

from legcf_core import stages
from legcf_core.artifacts import RunDir
from legcf_core.evaluation import evaluate

TINY = [
    "--dim",
    "16",
    "--layers",
    "2",
    "--epochs",
    "2",
    "--batch-size",
    "4096",
    "--lr",
    "0.02",
    "--device",
    "cpu",
]


@pytest.fixture
def prepared_copy(tmp_path, prepared_run):
    return copy_run(prepared_run, tmp_path / "run")


@pytest.mark.parametrize(
    ("embedding", "backbone"), [("full", "lightgcn"), ("qr", "lrgccf"), ("pep", "ngcf"), ("full", "ngcf")]
)
def test_baseline_pretrain_export_and_inspect(prepared_copy, tmp_path, embedding, backbone):
    invoke_ok("pretrain", prepared_copy, "--embedding", embedding, "--backbone", backbone, *TINY)
    evaluated = json.loads(invoke_ok("evaluate", prepared_copy, "--json", "--device", "cpu").stdout)
    output = tmp_path / "model.safetensors"
    exported = json.loads(invoke_ok("export", prepared_copy, "-o", output, "--json").stdout)
    assert exported["embedding"] == embedding and exported["backbone"] == backbone
    summary = json.loads(invoke_ok("inspect", output, "--json").stdout)
    for key in ("params", "full_table_params", "per_entity", "dim", "entities"):
        assert key in summary
    assert summary["params"] == exported["params"]
    if embedding != "full":  # the default budget: LEGCF at c=500, t=2, d=16
        assert summary["params"] <= 500 * 16 + summary["entities"] * 2
    # the exported file scores exactly like the run directory
    run = RunDir(prepared_copy)
    data = stages.load_data(run)
    h = stages.load_export(output).embeddings()
    metrics = evaluate(h[: data.n_users], h[data.n_users :], data.train, data.test)
    assert metrics["ndcg@20"] == pytest.approx(evaluated["ndcg@20"], abs=1e-6)


def test_pep_refine_retrains_the_pruned_pattern(prepared_copy):
    invoke_ok("pretrain", prepared_copy, "--embedding", "pep", "--budget", "3000", *TINY)
    pruned = json.loads(invoke_ok("inspect", prepared_copy, "--json", "--model", "pretrain").stdout)
    assert pruned["params"] <= 3000
    invoke_ok("refine", prepared_copy, *TINY[4:])
    refined = json.loads(invoke_ok("inspect", prepared_copy, "--json", "--model", "refine").stdout)
    assert refined["params"] == pruned["params"]  # same pattern, retrained values
    manifest = json.loads((prepared_copy / "manifest.json").read_text())
    assert manifest["stages"]["pretrain"]["config"]["budget"] == 3000
    assert all("nonzeros" in row for row in manifest["stages"]["pretrain"]["history"])


def test_refine_of_a_full_table_is_a_clean_error(prepared_copy):
    invoke_ok("pretrain", prepared_copy, "--embedding", "full", *TINY)
    before = snapshot(prepared_copy)
    assert_clean_error(invoke("refine", prepared_copy, "--device", "cpu"), "nothing to refine")
    assert snapshot(prepared_copy) == before


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--embedding", "hash"], "--embedding"),
        (["--backbone", "gat"], "--backbone"),
        (["--embedding", "qr", "--budget", "10"], "budget"),
        (["--embedding", "pep", "--budget", "0"], "--budget"),
        (["--embedding", "pep", "--budget", "999999999"], "full table"),
    ],
)
def test_bad_baseline_options(prepared_copy, options, needle):
    before = snapshot(prepared_copy)
    assert_clean_error(invoke("pretrain", prepared_copy, *options, *TINY), needle)
    assert snapshot(prepared_copy) == before


def test_legcf_pretrain_still_needs_a_partition(prepared_copy):
    assert_clean_error(invoke("pretrain", prepared_copy, *TINY), "partition")


def test_run_with_a_baseline_skips_the_stages_it_has_no_use_for(tmp_path, demo_path):
    result = invoke_ok(
        "run",
        tmp_path / "run",
        "--data",
        demo_path,
        "--embedding",
        "qr",
        "-c",
        "30",
        "--dim",
        "16",
        "--pretrain-epochs",
        "2",
        "--batch-size",
        "4096",
        "--device",
        "cpu",
        "--json",
    )
    summary = json.loads(result.stdout)
    assert summary["embedding"] == "qr" and summary["kept"] == "pretrain"
    stages_run = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert "partition" not in stages_run and "refine" not in stages_run
    entities = stages_run["prepare"]["metrics"]["users"] + stages_run["prepare"]["metrics"]["items"]
    assert summary["params"] <= 30 * 16 + 2 * entities


def test_full_table_with_a_budget_gets_the_widest_dimension_that_fits(prepared_copy):
    invoke_ok("pretrain", prepared_copy, "--embedding", "full", "--budget", "5000", *TINY)
    summary = json.loads(invoke_ok("inspect", prepared_copy, "--json").stdout)
    assert summary["dim"] == 5000 // summary["entities"]
    assert summary["params"] == summary["dim"] * summary["entities"] <= 5000
    assert (
        json.loads((prepared_copy / "manifest.json").read_text())["stages"]["pretrain"]["config"]["budget"]
        == 5000
    )
    assert_clean_error(
        invoke("pretrain", prepared_copy, "--embedding", "full", "--budget", "10", *TINY), "budget"
    )


@pytest.mark.parametrize(
    ("embedding", "backbone", "batch", "lr"),
    [("full", "lightgcn", 16384, 0.05), ("full", "ngcf", 65536, 0.005), ("qr", "lightgcn", 65536, 0.05)],
)
def test_each_layer_gets_its_tuned_batch_and_lr_unless_told(prepared_copy, embedding, backbone, batch, lr):
    options = ["--dim", "16", "--layers", "2", "--epochs", "1", "--device", "cpu"]
    invoke_ok("pretrain", prepared_copy, "--embedding", embedding, "--backbone", backbone, *options)
    config = json.loads((prepared_copy / "manifest.json").read_text())["stages"]["pretrain"]["config"]
    assert (config["batch_size"], config["lr"]) == (batch, lr)


def test_legcf_pretrain_and_refine_get_the_tuned_batch_and_lr_unless_told(tmp_path, partitioned_run):
    run_dir = copy_run(partitioned_run, tmp_path / "run")
    options = ["--epochs", "1", "--device", "cpu"]
    invoke_ok("pretrain", run_dir, "--dim", "16", "--layers", "2", *options)
    invoke_ok("refine", run_dir, *options)
    for stage in manifest_stages(run_dir).values():
        assert (stage["config"]["batch_size"], stage["config"]["lr"]) == (16384, 0.1)
    invoke_ok("refine", run_dir, "--batch-size", "4096", "--lr", "0.02", *options)  # told: rerun alone
    config = manifest_stages(run_dir)["refine"]["config"]
    assert (config["batch_size"], config["lr"]) == (4096, 0.02)


def manifest_stages(run_dir) -> dict:
    stages_done = json.loads((run_dir / "manifest.json").read_text())["stages"]
    return {name: stages_done[name] for name in ("pretrain", "refine")}
