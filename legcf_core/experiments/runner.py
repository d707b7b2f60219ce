"""Run a comparison: one run directory per configuration and seed, resumed when possible.

Results are kept per run directory in ``result.json``, written last, so an
interrupted comparison resumes by skipping every configuration that has one.
A run trained with other settings than a configuration asks for today is moved
aside under ``stale/`` and trained again; nothing is deleted but an
interrupted run, which is started over.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from legcf_core import artifacts as art
from legcf_core import stages
from legcf_core.errors import ArtifactError, ConfigError
from legcf_core.experiments.sets import (
    NO_OVERRIDES,
    SETS,
    Experiment,
    Overrides,
    check_sets,
    partition_config,
    resolve,
    run_name,
    training_configs,
)
from legcf_core.experiments.summary import (
    METRICS,
    recorded_training,
    table_rows,
    trained_as,
    validation_scores,
)
from legcf_core.progress import Reporter, SilentReporter

RESULT_FILE = "result.json"
RESULT_VERSION = 1
STALE_DIR = "stale"


def run_experiment(
    out: Path,
    experiment: Experiment,
    data_path: Path,
    seed: int,
    device: torch.device,
    overrides: Overrides = NO_OVERRIDES,
    reporter: Reporter | None = None,
) -> tuple[dict[str, Any], bool]:
    """Train (unless done before) and score one configuration; returns its result and
    whether it was run now (False: read from an earlier run)."""
    reporter = reporter or SilentReporter()
    experiment = resolve(experiment, overrides)
    run_dir = out / "runs" / run_name(experiment, seed, overrides)
    pretrain_train, refine_train = training_configs(experiment, seed, overrides)
    done = read_result(run_dir)
    if done is not None:
        recorded = recorded_training(art.RunDir(run_dir).load_manifest())
        if trained_as(recorded, pretrain_train, refine_train):
            return done, False
        kept = retire(out, run_dir)
        reporter.note(f"{run_dir.name} was trained with other settings; kept it as {kept}, training again")
    elif run_dir.exists():  # an interrupted run (no result.json): start it over
        art.remove_run_dir(run_dir)
    run = art.RunDir(run_dir)
    started = time.perf_counter()
    summary = stages.run_all(
        run,
        data_path,
        partition_config(experiment, seed),
        stages.PretrainConfig(
            experiment.dim, experiment.layers, pretrain_train, experiment.embedding, experiment.backbone
        ),
        stages.RefineConfig(experiment.update_every, refine_train, experiment.solver),
        device,
        reporter=reporter,
        match_budget=experiment.match_budget,
        protocol=stages.PrepareConfig(validation=overrides.validation or "test-third"),
    )
    wall = time.perf_counter() - started
    evaluations = {"auto": _metrics(summary)}
    if "refine" in run.load_manifest()["stages"]:
        evaluations["pretrain"] = _metrics(stages.evaluate_run(run, "test", (10, 20), "pretrain", device))
    result = {
        "result_version": RESULT_VERSION,
        "key": experiment.key(),
        "seed": seed,
        "data": str(Path(data_path).resolve()),
        "device": str(device),
        "overrides": asdict(overrides),
        "params": summary["params"],
        "bytes": summary["embedding_bytes"],
        "kept": summary["kept"],
        "wall_s": round(wall, 1),
        "evaluations": evaluations,
    }
    art.write_json_atomic(run_dir / RESULT_FILE, result)
    return result, True


def _metrics(values: dict[str, Any]) -> dict[str, float]:
    return {name: float(values[name]) for name in METRICS}


def retire(out: Path, run_dir: Path) -> Path:
    """Move a stale run directory under ``out/stale`` (nothing is deleted); returns where."""
    return art.move_run_dir(run_dir, out / STALE_DIR / f"{run_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}")


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``result.json``, or None if it is missing, unreadable or of another version."""
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return result if result.get("result_version") == RESULT_VERSION else None


def collect(out: Path, overrides: Overrides = NO_OVERRIDES) -> dict[tuple[str, int], dict[str, Any]]:
    """Every finished result under ``out/runs`` made with ``overrides``, by (run key, seed),
    with the training settings and validation scores its manifest recorded."""
    found = {}
    runs = out / "runs"
    if not runs.is_dir():
        return found
    for run_dir in sorted(runs.iterdir()):
        result = read_result(run_dir)
        if result is not None and result.get("overrides") == asdict(overrides):
            manifest = art.RunDir(run_dir).load_manifest()
            found[(result["key"], int(result["seed"]))] = {
                **result,
                "valid": validation_scores(manifest),
                "training": recorded_training(manifest),
            }
    return found


def check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out} exists and is not a directory")


def planned(
    set_names: list[str], seeds: list[int], overrides: Overrides
) -> dict[tuple[str, int], Experiment]:
    """One configuration to train per run directory and seed, in the sets' order."""
    todo: dict[tuple[str, int], Experiment] = {}
    for set_name in set_names:
        for experiment in SETS[set_name]:
            for seed in seeds:
                todo.setdefault((resolve(experiment, overrides).key(), seed), experiment)
    return todo


def compare(
    out: Path,
    set_names: list[str],
    data_path: Path,
    seeds: list[int],
    device: torch.device,
    overrides: Overrides = NO_OVERRIDES,
    reporter: Reporter | None = None,
    train: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Run every configuration of the named sets for each seed (skipping finished ones)
    and return each set's table rows, from every result finished under ``out``.

    With ``train=False`` nothing is trained: the rows hold what has finished."""
    reporter = reporter or SilentReporter()
    check_sets(set_names)
    check_output(out)
    if not seeds:
        raise ConfigError("seeds", "must name at least one seed")
    todo = planned(set_names, seeds, overrides) if train else {}
    overall = reporter.task("configurations", len(todo))
    for (key, seed), experiment in todo.items():
        result, ran = run_experiment(out, experiment, Path(data_path), seed, device, overrides, reporter)
        auto = result["evaluations"]["auto"]
        reporter.log(
            f"{'ran' if ran else 'done before'}: {key} seed {seed}  N@20 {auto['ndcg@20']:.4f}  "
            f"R@20 {auto['recall@20']:.4f}  params {result['params']:,}  {result['wall_s']:.0f}s"
        )
        overall.advance(1)
    overall.close()
    results = collect(out, overrides)
    return {set_name: table_rows(set_name, results, seeds, overrides) for set_name in set_names}
