"""Finished results as table rows: test metrics averaged over seeds, with their spread.

Torch-free. A result stands for a configuration only if its run recorded the
training settings that configuration asks for today (:func:`trained_as`), so a
changed tuned value never lets an old result into a table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any

from legcf_core.config import VALIDATION_METRIC, TrainConfig
from legcf_core.experiments.sets import (
    NO_OVERRIDES,
    SETS,
    Experiment,
    Overrides,
    resolve,
    run_name,
    training_configs,
)

METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")


def recorded_training(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The optimization settings each training stage of a run recorded in its manifest. A
    setting added after the run was made (absent from it) had its default then."""
    defaults = {field.name: field.default for field in fields(TrainConfig)}
    recorded = {}
    for stage in ("pretrain", "refine"):
        config = manifest["stages"].get(stage, {}).get("config")
        if config is not None:
            recorded[stage] = {name: config.get(name, default) for name, default in defaults.items()}
    return recorded


def trained_as(recorded: dict[str, dict[str, Any]], pretrain: TrainConfig, refine: TrainConfig) -> bool:
    """Whether a finished run used these settings, so its result stands for this
    configuration. A changed tuned value (``legcf_core.tuning.TABLE``) makes old results
    stale rather than silently reused."""
    expected = {"pretrain": asdict(pretrain), "refine": asdict(refine)}
    return "pretrain" in recorded and all(expected[stage] == recorded[stage] for stage in recorded)


def validation_scores(manifest: dict[str, Any]) -> dict[str, float | None]:
    """Validation NDCG@20 of the model each evaluation scored: pretrain's best, and the
    kept one (``auto``). Hyperparameters are chosen on these, never on test. None where
    the run had no validation split (``--validation none``)."""
    stages_done = manifest["stages"]
    pretrain = stages_done["pretrain"]["metrics"][VALIDATION_METRIC]
    refine = stages_done.get("refine")
    kept = refine["metrics"][VALIDATION_METRIC] if refine and refine.get("kept") == "refine" else pretrain
    return {"pretrain": pretrain, "auto": kept}


def table_rows(
    set_name: str,
    results: dict[tuple[str, int], dict[str, Any]],
    seeds: list[int],
    overrides: Overrides = NO_OVERRIDES,
) -> list[dict[str, Any]]:
    """One row per experiment of the set: metrics averaged over the seeds that finished.

    ``results`` maps (run key, seed) to a result with the run's recorded training
    settings and validation scores, as :func:`legcf_core.experiments.runner.collect`
    reads them."""
    rows = []
    for experiment in SETS[set_name]:
        experiment = resolve(experiment, overrides)
        found = [
            result
            for seed in seeds
            if (result := results.get((experiment.key(), seed))) is not None
            and trained_as(result["training"], *training_configs(experiment, seed, overrides))
        ]
        scored = [s for r in found if (s := r["evaluations"].get(experiment.model)) is not None]
        if scored:
            rows.append(_row(experiment, found, scored, overrides))
    return rows


def _row(
    experiment: Experiment,
    found: list[dict[str, Any]],
    scored: list[dict[str, float]],
    overrides: Overrides,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": experiment.name,
        "embedding": experiment.embedding,
        "backbone": experiment.backbone,
        "model": experiment.model,
        "run": experiment.key(),
        "run_dirs": [f"runs/{run_name(experiment, r['seed'], overrides)}" for r in found],
        "seeds": [r["seed"] for r in found],
        "params": found[0]["params"],  # S0 and an updated S have the same N*t nonzeros
        "bytes": found[0]["bytes"],
        "wall_s": round(sum(r["wall_s"] for r in found) / len(found), 1),
        "kept": [r["kept"] for r in found],
    }
    if experiment.sweep:
        row.update(sweep=experiment.sweep, value=experiment.value)
    for metric in METRICS:
        values = [s[metric] for s in scored]
        row[metric] = round(sum(values) / len(values), 6)
        row[f"{metric}_std"] = round(std(values), 6)
    valid = [r["valid"][experiment.model] for r in found]
    missing = None in valid  # no validation split (--validation none): nothing to average
    row[f"valid_{VALIDATION_METRIC}"] = None if missing else round(sum(valid) / len(valid), 6)
    return row


def std(values: list[float]) -> float:
    """The sample standard deviation (n - 1); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
