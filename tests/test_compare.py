"""``legcf compare`` end to end on the shipped demo data: its table rows are what
``legcf evaluate`` reports for the same run directories, the budgets hold, and a
second invocation resumes instead of retraining."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import assert_clean_error, invoke, invoke_ok

from legcf_core import tuning
from legcf_core.experiments.runner import STALE_DIR, collect, run_experiment
from legcf_core.experiments.sets import SETS, Experiment, Overrides, resolve, run_name
from legcf_core.experiments.summary import table_rows
from legcf_core.layers.qr import qr_remainders

SMALL = ["--epochs", "2", "--batch-size", "4096", "--dim", "16", "--codebook-size", "30", "--device", "cpu"]
OVERRIDES = Overrides(epochs=2, batch_size=4096, dim=16, codebook_size=30)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, demo_path) -> Path:
    out = tmp_path_factory.mktemp("compare") / "out"
    invoke_ok("compare", out, "--data", demo_path, "--set", "table2", "--set", "table3", *SMALL)
    return out


def rows_of(out: Path, set_name: str) -> list[dict]:
    return json.loads((out / f"{set_name}.json").read_text())["rows"]


def test_every_configuration_of_the_sets_has_a_row(compared):
    for set_name in ("table2", "table3"):
        names = [row["name"] for row in rows_of(compared, set_name)]
        assert names == [experiment.name for experiment in SETS[set_name]]
        markdown = (compared / f"{set_name}.md").read_text()
        assert all(f"| {name} |" in markdown for name in names)
        assert "legcf compare" in markdown  # the command that made it
        assert (compared / f"{set_name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (compared / "pareto.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("set_name", ["table2", "table3"])
def test_rows_match_what_evaluate_reports(compared, set_name):
    for row in rows_of(compared, set_name):
        run_dir = compared / row["run_dirs"][0]
        result = invoke_ok("evaluate", run_dir, "--model", row["model"], "--json", "--device", "cpu")
        evaluated = json.loads(result.stdout)
        for metric in ("ndcg@10", "recall@10", "ndcg@20", "recall@20"):
            assert row[metric] == pytest.approx(evaluated[metric], abs=1e-6), (row["name"], metric)
        valid = invoke_ok("evaluate", run_dir, "--model", row["model"], "--split", "valid", "--json")
        chosen_on = json.loads(valid.stdout)["ndcg@20"]
        assert row["valid_ndcg@20"] == pytest.approx(chosen_on, abs=1e-5), row["name"]


def test_baselines_fit_the_legcf_budget(compared):
    rows = {row["name"]: row for row in rows_of(compared, "table2")}
    inspected = json.loads(invoke_ok("inspect", compared / rows["LEGCF"]["run_dirs"][0], "--json").stdout)
    budget = 30 * 16 + inspected["entities"] * 2  # c d + N t: baselines are sized to it
    assert rows["LEGCF"]["params"] == inspected["params"] <= budget  # clipping may leave < t in a row
    assert rows["QR"]["params"] <= budget
    r = qr_remainders(inspected["entities"], 16, budget)
    assert rows["QR"]["params"] == (r + math.ceil(inspected["entities"] / r)) * 16
    assert rows["PEP"]["params"] <= budget
    assert rows["full d=64"]["params"] == inspected["entities"] * 64
    assert rows["full d=128"]["params"] == inspected["entities"] * 16  # --dim replaced the default 128


def test_no_update_rows_score_the_pretrained_model(compared):
    rows = {row["name"]: row for row in rows_of(compared, "table3")}
    assert rows["METIS, update"]["run"] == rows["METIS, no update"]["run"]  # trained once
    manifest = json.loads((compared / rows["METIS, update"]["run_dirs"][0] / "manifest.json").read_text())
    results = manifest["stages"]["evaluate"]["results"]
    assert rows["METIS, no update"]["ndcg@20"] == pytest.approx(results["pretrain/test"]["ndcg@20"], abs=1e-6)


def test_the_paper_rows_start_from_the_papers_s0(compared):
    """The tables and ablations keep the paper's uniform draw of S0's others, not legcf's default."""
    for row in rows_of(compared, "table3"):
        manifest = json.loads((compared / row["run_dirs"][0] / "manifest.json").read_text())
        assert manifest["stages"]["partition"]["config"]["others"] == "random"


def test_a_second_run_resumes_and_reruns_only_what_is_missing(tmp_path, demo_path):
    out = tmp_path / "out"
    one_epoch = [*SMALL[:-2], "--epochs", "1", "--device", "cpu"]
    invoke_ok("compare", out, "--data", demo_path, "--set", "fig4-m", *one_epoch)
    results = sorted((out / "runs").glob("*/result.json"))
    assert len(results) == len(SETS["fig4-m"])
    before = {path: path.read_bytes() for path in results}
    results[0].unlink()  # as if interrupted before this configuration finished
    second = invoke_ok("compare", out, "--data", demo_path, "--set", "fig4-m", *one_epoch)
    assert second.stderr.count("done before") == len(results) - 1
    for path in results[1:]:
        assert path.read_bytes() == before[path]
    assert results[0].is_file()


def test_overrides_leave_non_default_values_alone():
    assert resolve(Experiment("x", dim=64), OVERRIDES).dim == 64
    assert resolve(Experiment("x"), OVERRIDES).dim == 16
    assert resolve(SETS["fig4-c"][0], OVERRIDES).codebook_size == 100


def test_run_directory_names_are_what_earlier_comparisons_wrote():
    """Finished runs are found again by name, so the keys must never drift. LEGCF rows name
    their solver since the default stopped being pinv: earlier (pinv) runs keep their names."""
    assert [experiment.key() for experiment in SETS["table2"]] == [
        "full-lightgcn-d64-L3",
        "full-lightgcn-d128-L3",
        "qr-lightgcn-d128-L3-c500-t2",
        "pep-lightgcn-d128-L3-c500-t2",
        "tt-lightgcn-d128-L3-c500-t2",
        "legcf-lightgcn-d128-L3-c500-t2-w0.5-metis-m1-pooled",
    ]
    assert SETS["table4"][3].key() == "full-ngcf-d128-L3-c500-t2"  # matched to LEGCF's budget
    assert SETS["fig4-t"][0].key() == "legcf-lightgcn-d128-L3-c500-t1-w1-metis-m1-pooled"
    assert run_name(SETS["table3"][2], 7, OVERRIDES) == (
        "legcf-lightgcn-d128-L3-c500-t2-w0.5-random-m1-pooled-seed7-override-epochs2-batch_size4096-dim16-codebook_size30"
    )


def test_unknown_set_is_a_clean_error(tmp_path, demo_path):
    result = invoke("compare", tmp_path / "out", "--data", demo_path, "--set", "table9")
    assert_clean_error(result, "table9")
    assert not (tmp_path / "out").exists()


def test_list_names_every_set():
    output = invoke_ok("compare", "unused", "--list").stdout
    assert all(name in output for name in SETS)


def test_report_only_trains_nothing(compared, demo_path):
    runs_before = sorted(p.name for p in (compared / "runs").iterdir())
    result = invoke_ok(
        "compare",
        compared,
        "--data",
        demo_path,
        "--set",
        "table2",
        "--set",
        "fig4-t",
        "--report-only",
        *SMALL,
    )
    assert sorted(p.name for p in (compared / "runs").iterdir()) == runs_before
    assert [row["name"] for row in rows_of(compared, "table2")] == [e.name for e in SETS["table2"]]
    # of the t sweep only t=2 has finished: it is table2's LEGCF run
    assert [row["name"] for row in rows_of(compared, "fig4-t")] == ["t=2"]
    assert "| LEGCF |" in result.stdout


def test_a_smoke_run_never_replaces_a_finished_one(tmp_path, demo_path):
    out = tmp_path / "out"
    one_epoch = [
        "--epochs",
        "1",
        "--batch-size",
        "4096",
        "--dim",
        "16",
        "--codebook-size",
        "30",
        "--device",
        "cpu",
    ]
    invoke_ok("compare", out, "--data", demo_path, "--set", "table3", *one_epoch)
    first = {p: p.read_bytes() for p in (out / "runs").glob("*/result.json")}
    invoke_ok(
        "compare",
        out,
        "--data",
        demo_path,
        "--set",
        "table3",
        *one_epoch[:-2],
        "--epochs",
        "2",
        "--device",
        "cpu",
    )
    for path, content in first.items():
        assert path.read_bytes() == content  # the other settings went to their own directories
    assert len(list((out / "runs").glob("*/result.json"))) == 2 * len(first)


def test_a_result_trained_with_other_settings_is_retrained_not_reused(tmp_path, demo_path, monkeypatch):
    out = tmp_path / "out"
    overrides = Overrides(epochs=1, dim=16)
    full = SETS["table2"][1]  # full d=128, resolved to d=16
    cpu = torch.device("cpu")
    assert run_experiment(out, full, demo_path, 2024, cpu, overrides)[1]  # trained
    assert not run_experiment(out, full, demo_path, 2024, cpu, overrides)[1]  # done before

    changed = replace(tuning.TABLE[("full", "lightgcn")], lr=0.02)
    monkeypatch.setitem(tuning.TABLE, ("full", "lightgcn"), changed)  # as when a tuned lr changes
    names = [row["name"] for row in table_rows("table2", collect(out, overrides), [2024], overrides)]
    assert full.name not in names  # an old result never stands for the new settings

    assert run_experiment(out, full, demo_path, 2024, cpu, overrides)[1]  # trained again
    (kept,) = (out / STALE_DIR).iterdir()  # the old run is moved aside, not lost
    assert (kept / "result.json").is_file()
    run_dir = out / "runs" / run_name(resolve(full, overrides), 2024, overrides)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["pretrain"]["config"]["lr"] == 0.02
    names = [row["name"] for row in table_rows("table2", collect(out, overrides), [2024], overrides)]
    assert names == [full.name]


def test_a_result_from_before_a_setting_existed_is_reused(tmp_path, demo_path):
    out, overrides = tmp_path / "out", Overrides(epochs=1, dim=16)
    legcf = SETS["table2"][-1]
    cpu = torch.device("cpu")
    assert run_experiment(out, legcf, demo_path, 2024, cpu, overrides)[1]
    manifest_path = out / "runs" / run_name(resolve(legcf, overrides), 2024, overrides) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for stage in ("pretrain", "refine"):  # as a run made before --lr-schedule and --solver
        del manifest["stages"][stage]["config"]["lr_schedule"]
    del manifest["stages"]["refine"]["config"]["solver"]
    manifest_path.write_text(json.dumps(manifest))
    assert not run_experiment(out, legcf, demo_path, 2024, cpu, overrides)[1]  # read, not retrained
    # runs from before --solver used pinv and keep their names; another solver gets its own
    assert Experiment("a", solver="pinv").key() == "legcf-lightgcn-d128-L3-c500-t2-w0.5-metis-m1"
    assert Experiment("a", solver="pursuit").key() == "legcf-lightgcn-d128-L3-c500-t2-w0.5-metis-m1-pursuit"
