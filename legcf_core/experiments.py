"""Named sets of configurations, run one run directory each, aggregated into tables.

An :class:`Experiment` is one row of a comparison: an embedding layer, a
backbone and the symbols that size it, plus which trained model to score
(``pretrain`` gives the paper's no-update ablation from the same run). Rows
that differ only in that share one run directory, trained once.

Results are kept per run directory in ``result.json``, written last, so an
interrupted comparison resumes by skipping every configuration that has one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from legcf_core import artifacts as art
from legcf_core import stages
from legcf_core.config import VALIDATION_METRIC, RefineConfig, TrainConfig
from legcf_core.errors import ArtifactError, ConfigError
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.tuning import tuned

RESULT_FILE = "result.json"
RESULT_VERSION = 1
METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")

@dataclass(frozen=True)
class Experiment:
    """One configuration of a comparison and the model of it that is scored."""

    name: str
    embedding: str = "legcf"
    backbone: str = "lightgcn"
    dim: int = 128
    layers: int = 3
    codebook_size: int = 500
    per_entity: int = 2
    anchor_weight: float = 0.5
    init: str = "metis"
    update_every: int = 1
    model: str = "auto"  # "pretrain": score the model before any assignment update
    match_budget: bool = False  # full table: the widest d within LEGCF's budget at c, t, dim
    sweep: str = ""  # the swept symbol, for Figure 4 plots
    value: float = 0.0  # its value in this row

    def key(self) -> str:
        """The run directory name: everything that changes training, nothing else."""
        parts = [self.embedding, self.backbone, f"d{self.dim}", f"L{self.layers}"]
        if self.embedding in ("legcf", "qr", "pep") or self.match_budget:
            parts += [f"c{self.codebook_size}", f"t{self.per_entity}"]
        if self.embedding == "legcf":
            parts += [f"w{self.anchor_weight:g}", self.init, f"m{self.update_every}"]
        return "-".join(parts)


def _sweep(symbol: str, values: list[float], **fixed: Any) -> list[Experiment]:
    field = {"t": "per_entity", "c": "codebook_size", "w*": "anchor_weight", "m": "update_every"}[symbol]
    rows = []
    for value in values:
        settings = {field: int(value) if symbol != "w*" else value, **fixed}
        if symbol == "t" and value == 1:
            settings["anchor_weight"] = 1.0  # one bucket per entity holds all the weight
        rows.append(Experiment(f"{symbol}={value:g}", sweep=symbol, value=float(value), **settings))
    return rows


SETS: dict[str, list[Experiment]] = {
    "table2": [
        Experiment("full d=64", embedding="full", dim=64),
        Experiment("full d=128", embedding="full"),
        Experiment("QR", embedding="qr"),
        Experiment("PEP", embedding="pep"),
        Experiment("LEGCF"),
    ],
    "table3": [
        Experiment("METIS, update"),
        Experiment("METIS, no update", model="pretrain"),
        Experiment("random, update", init="random"),
        Experiment("random, no update", init="random", model="pretrain"),
    ],
    "table4": [  # the paper's UD rows here are full tables of LEGCF's size
        experiment
        for backbone in ("lightgcn", "ngcf", "lrgccf")
        for experiment in (
            Experiment(f"LEGCF {backbone}", backbone=backbone),
            Experiment(
                f"full {backbone}, same budget", embedding="full", backbone=backbone, match_budget=True
            ),
        )
    ],
    "fig4-t": _sweep("t", [1, 2, 3, 4, 5]),
    "fig4-c": _sweep("c", [100, 500, 1000, 5000, 10000]),
    "fig4-w": _sweep("w*", [0.5, 0.6, 0.7, 0.8, 0.9]),
    "fig4-m": _sweep("m", [1, 2, 3, 5, 10]),
}


@dataclass(frozen=True)
class Overrides:
    """Settings that replace the tuned ones for every configuration (smoke runs, tests)."""

    epochs: int | None = None
    batch_size: int | None = None
    dim: int | None = None
    codebook_size: int | None = None


def run_name(experiment: Experiment, seed: int, overrides: Overrides) -> str:
    """A configuration's run directory name; overridden settings get their own directory,
    so a smoke run never replaces a finished real one."""
    name = f"{experiment.key()}-seed{seed}"
    changed = [f"{field}{value}" for field, value in asdict(overrides).items() if value is not None]
    return name if not changed else f"{name}-override-{'-'.join(changed)}"


def resolve(experiment: Experiment, overrides: Overrides) -> Experiment:
    """The experiment with the overrides applied where it uses the default value
    (a d=64 row stays d=64; the c sweep keeps its c values)."""
    changes: dict[str, int] = {}
    if overrides.dim and experiment.dim == Experiment.dim:
        changes["dim"] = overrides.dim
    if overrides.codebook_size and experiment.sweep != "c":
        changes["codebook_size"] = overrides.codebook_size
    return replace(experiment, **changes)


def training_configs(
    experiment: Experiment, seed: int, overrides: Overrides
) -> tuple[TrainConfig, TrainConfig]:
    """Pretrain and refine settings: TrainConfig's defaults with the lr and batch
    tuned for the layer (as on the command line), then the overrides."""
    defaults = tuned(experiment.embedding, experiment.backbone)
    base = TrainConfig(seed=seed, batch_size=defaults.batch_size, lr=defaults.lr)
    if overrides.batch_size:
        base = replace(base, batch_size=overrides.batch_size)
    refine_defaults = RefineConfig().train
    pretrain_epochs, refine_epochs = defaults.pretrain_epochs, defaults.refine_epochs
    pretrain = replace(base, epochs=overrides.epochs or pretrain_epochs)
    refine = replace(base, epochs=overrides.epochs or refine_epochs, lr_decay=refine_defaults.lr_decay)
    return pretrain, refine


def run_experiment(
    out: Path,
    experiment: Experiment,
    data_path: Path,
    seed: int,
    device: torch.device,
    overrides: Overrides = Overrides(),
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
        shutil.rmtree(run_dir)
    partition_config = stages.PartitionConfig(
        experiment.codebook_size, experiment.per_entity, experiment.anchor_weight, experiment.init, seed
    )
    pretrain_config = stages.PretrainConfig(
        experiment.dim, experiment.layers, pretrain_train, experiment.embedding, experiment.backbone
    )
    refine_config = stages.RefineConfig(experiment.update_every, refine_train)
    run = art.RunDir(run_dir)
    started = time.perf_counter()
    summary = stages.run_all(
        run,
        data_path,
        partition_config,
        pretrain_config,
        refine_config,
        device,
        reporter=reporter,
        match_budget=experiment.match_budget,
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


STALE_DIR = "stale"


def recorded_training(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The optimization settings each training stage of a run recorded in its manifest."""
    names = [field.name for field in fields(TrainConfig)]
    recorded = {}
    for stage in ("pretrain", "refine"):
        config = manifest["stages"].get(stage, {}).get("config")
        if config is not None:
            recorded[stage] = {name: config.get(name) for name in names}
    return recorded


def trained_as(recorded: dict[str, dict[str, Any]], pretrain: TrainConfig, refine: TrainConfig) -> bool:
    """Whether a finished run used these settings, so its result stands for this
    configuration. A changed tuned value (``legcf_core.tuning.TABLE``) makes old results
    stale rather than silently reused."""
    expected = {"pretrain": asdict(pretrain), "refine": asdict(refine)}
    return "pretrain" in recorded and all(expected[stage] == recorded[stage] for stage in recorded)


def retire(out: Path, run_dir: Path) -> Path:
    """Move a stale run directory under ``out/stale`` (nothing is deleted); returns where."""
    target = out / STALE_DIR / f"{run_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    run_dir.rename(target)
    return target


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return result if result.get("result_version") == RESULT_VERSION else None


def table_rows(
    set_name: str,
    results: dict[tuple[str, int], dict[str, Any]],
    seeds: list[int],
    overrides: Overrides = Overrides(),
) -> list[dict[str, Any]]:
    """One row per experiment of the set: metrics averaged over the seeds that finished."""
    rows = []
    for experiment in SETS[set_name]:
        experiment = resolve(experiment, overrides)
        found = [
            result
            for seed in seeds
            if (result := results.get((experiment.key(), seed))) is not None
            and trained_as(result["training"], *training_configs(experiment, seed, overrides))
        ]
        if not found:
            continue
        scored = [r["evaluations"].get(experiment.model) for r in found]
        scored = [s for s in scored if s is not None]
        if not scored:
            continue
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
            row[f"{metric}_std"] = round(_std(values), 6)
        valid = [r["valid"][experiment.model] for r in found]  # collect() reads it from the manifest
        row[f"valid_{VALIDATION_METRIC}"] = round(sum(valid) / len(valid), 6)
        rows.append(row)
    return rows


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def markdown_table(title: str, rows: list[dict[str, Any]], command: str) -> str:
    """The table a reader compares methods by, with the command that made it."""
    lines = [
        f"### {title}",
        "",
        f"`{command}`",
        "",
        "| configuration | params | bytes | valid N@20 | N@10 | R@10 | N@20 | R@20 "
        "| wall | seeds | model kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        cells = [
            f"{row[m]:.4f}" + (f" ± {row[m + '_std']:.4f}" if len(row["seeds"]) > 1 else "") for m in METRICS
        ]
        lines.append(
            f"| {row['name']} | {row['params']:,} | {row['bytes']:,} "
            f"| {row[f'valid_{VALIDATION_METRIC}']:.4f} | {' | '.join(cells)} "
            f"| {_duration(row['wall_s'])} | {len(row['seeds'])} | {_kept(row)} |"
        )
    return "\n".join(lines) + "\n"


def _kept(row: dict[str, Any]) -> str:
    if row["model"] == "pretrain":
        return "pretrain (asked)"
    return ", ".join(sorted(set(row["kept"])))


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def check_sets(names: list[str]) -> None:
    unknown = [name for name in names if name not in SETS]
    if unknown:
        raise ConfigError(f"unknown set {', '.join(unknown)}; expected some of {', '.join(SETS)}")
    if not names:
        raise ConfigError("name at least one set with --set")


def collect(out: Path, overrides: Overrides = Overrides()) -> dict[tuple[str, int], dict[str, Any]]:
    """Every finished result under ``out/runs`` made with ``overrides``, by (run key, seed)."""
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


def validation_scores(manifest: dict[str, Any]) -> dict[str, float]:
    """Validation NDCG@20 of the model each evaluation scored: pretrain's best, and the
    kept one (``auto``). Hyperparameters are chosen on these, never on test."""
    stages_done = manifest["stages"]
    pretrain = stages_done["pretrain"]["metrics"][VALIDATION_METRIC]
    refine = stages_done.get("refine")
    kept = refine["metrics"][VALIDATION_METRIC] if refine and refine.get("kept") == "refine" else pretrain
    return {"pretrain": pretrain, "auto": kept}


def check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out} exists and is not a directory")


def write_set(out: Path, set_name: str, rows: list[dict[str, Any]], command: str) -> list[Path]:
    """``<set>.md``, ``<set>.json`` and ``<set>.png`` for one set's rows."""
    from legcf_core.plots import pareto_plot, sweep_plot  # matplotlib only when plotting

    title = f"{set_name}: {TITLES.get(set_name, set_name)}"
    paths = [out / f"{set_name}.md", out / f"{set_name}.json", out / f"{set_name}.png"]
    art.write_bytes_atomic(paths[0], markdown_table(title, rows, command).encode())
    art.write_json_atomic(paths[1], {"set": set_name, "command": command, "rows": rows})
    if set_name.startswith("fig4-"):
        sweep_plot(rows, paths[2], title)
    else:
        pareto_plot(rows, paths[2], title=title)
    return paths


TITLES = {
    "table2": "embedding layers at LEGCF's c=500, t=2 budget (paper Table 2)",
    "table3": "METIS or random init, with or without assignment updates (paper Table 3)",
    "table4": "three backbones, LEGCF against a full table of the same size (paper Table 4)",
    "fig4-t": "meta-embeddings per entity t (paper Figure 4a)",
    "fig4-c": "codebook size c (paper Figure 4d)",
    "fig4-w": "anchor weight w* (paper Figure 4c)",
    "fig4-m": "update interval m (paper Figure 4b)",
}


def compare(
    out: Path,
    set_names: list[str],
    data_path: Path,
    seeds: list[int],
    device: torch.device,
    overrides: Overrides = Overrides(),
    command: str = "",
    reporter: Reporter | None = None,
    train: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Run every configuration of the named sets for each seed (skipping finished ones),
    then write each set's table and plot, plus ``pareto.png`` over all rows.

    With ``train=False`` nothing is trained: the tables hold what has finished."""
    from legcf_core.plots import pareto_plot

    reporter = reporter or SilentReporter()
    check_sets(set_names)
    check_output(out)
    if not seeds:
        raise ConfigError("give at least one seed")
    todo: dict[tuple[str, int], Experiment] = {}  # one training per run directory and seed
    for set_name in set_names:
        for experiment in SETS[set_name]:
            for seed in seeds:
                todo.setdefault((resolve(experiment, overrides).key(), seed), experiment)
    if not train:
        todo = {}
    overall = reporter.task("configurations", len(todo))
    for (key, seed), experiment in todo.items():
        label = f"{key} seed {seed}"
        result, ran = run_experiment(out, experiment, Path(data_path), seed, device, overrides, reporter)
        auto = result["evaluations"]["auto"]
        reporter.log(
            f"{'ran' if ran else 'done before'}: {label}  N@20 {auto['ndcg@20']:.4f}  "
            f"R@20 {auto['recall@20']:.4f}  params {result['params']:,}  {result['wall_s']:.0f}s"
        )
        overall.advance(1)
    overall.close()
    results = collect(out, overrides)
    tables = {}
    every_row = []
    for set_name in set_names:
        rows = table_rows(set_name, results, seeds, overrides)
        write_set(out, set_name, rows, command)
        tables[set_name] = rows
        every_row += [row for row in rows if row["model"] == "auto"]
    unique = {row["run"]: row for row in every_row}
    pareto_plot(list(unique.values()), out / "pareto.png", title="test NDCG@20 against embedding parameters")
    return tables
