"""The pipeline stages: each reads earlier artifacts from a run directory,
calls the engine, and writes its own artifacts and manifest entry.

The CLI is a thin layer over these functions; they report progress through a
:class:`~legcf_core.progress.Reporter` and never print.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.backbones import make_backbone
from legcf_core.config import PartitionConfig, PretrainConfig, RefineConfig
from legcf_core.data import Interactions, dataset_files, load_dataset
from legcf_core.embeddings import (
    PEP_THRESHOLD_INIT,
    QRTable,
    check_budget,
    legcf_params,
    prune_to_budget,
    qr_remainders,
    xavier_uniform,
)
from legcf_core.errors import ArtifactError, ConfigError
from legcf_core.evaluation import DEFAULT_KS, evaluate
from legcf_core.graph import bipartite_adjacency
from legcf_core.inspection import describe
from legcf_core.model import CodebookModel, GraphModel
from legcf_core.partition import (
    check_anchor_weight,
    check_sizes,
    initial_assignment,
    metis_partition,
    random_partition,
)
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.spec import (
    BACKBONE_PREFIX,
    ModelSpec,
    build_model,
    check_choice,
    spec_from_arrays,
    with_state,
)
from legcf_core.training import (
    VALIDATION_METRIC,
    EpochLog,
    TrainConfig,
    TrainResult,
    batch_count,
    fit,
    prune,
    validate,
)

SPLITS = ("train", "valid", "test")
CPU = torch.device("cpu")


# -------------------------------------------------------------------- prepare


def fingerprint(data: Interactions) -> str:
    """A digest of the mapped dataset; every later artifact records it."""
    digest = hashlib.sha256()
    for matrix in (data.train, data.valid, data.test):
        digest.update(np.asarray(matrix.shape, dtype=np.int64).tobytes())
        digest.update(matrix.indptr.astype(np.int64).tobytes())
        digest.update(matrix.indices.astype(np.int64).tobytes())
    digest.update(data.user_ids.astype(np.int64).tobytes())
    digest.update(data.item_ids.astype(np.int64).tobytes())
    return digest.hexdigest()


def prepare(
    run: art.RunDir,
    data_path: Path,
    seed: int = 2024,
    test_fraction: float = 0.2,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Read, validate and split a dataset; write ``data.safetensors``."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    task = reporter.task("reading dataset", None)
    data = load_dataset(Path(data_path), test_fraction=test_fraction, seed=seed)
    task.close()
    digest = fingerprint(data)
    tensors: dict[str, np.ndarray] = {"user_ids": data.user_ids, "item_ids": data.item_ids}
    for name in SPLITS:
        tensors.update(art.csr_arrays(name, data.split(name), with_data=False))
    meta = art.header("interactions", dataset=digest, n_users=data.n_users, n_items=data.n_items)
    out = art.write_tensors(run.file(art.DATA_FILE), tensors, meta)
    summary = {
        "users": data.n_users,
        "items": data.n_items,
        "train": int(data.train.nnz),
        "valid": int(data.valid.nnz),
        "test": int(data.test.nnz),
    }
    sources = {str(p.resolve()): art.sha256_file(p) for p in dataset_files(Path(data_path))}
    run.record(
        "prepare",
        {
            "config": {"data": str(Path(data_path).resolve()), "seed": seed, "test_fraction": test_fraction},
            "inputs": {},
            "sources": sources,
            "outputs": {art.DATA_FILE: out},
            "metrics": summary,
            "seconds": round(time.perf_counter() - started, 3),
        },
        dataset={"fingerprint": digest, "source": str(Path(data_path).resolve()), **summary},
    )
    return summary


def load_data(run: art.RunDir) -> Interactions:
    """The run's prepared interactions, checked against the manifest."""
    run.stage("prepare")
    path = run.file(art.DATA_FILE)
    tensors, meta = art.read_tensors(path, kind="interactions")
    run.check_dataset(meta, path)
    splits = {name: art.csr_from_arrays(name, tensors).astype(np.float32) for name in SPLITS}
    return Interactions(
        splits["train"], splits["valid"], splits["test"], tensors["user_ids"], tensors["item_ids"]
    )


# ------------------------------------------------------------------ partition


def partition(run: art.RunDir, config: PartitionConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Initial assignment S0 from METIS (or random) anchors; writes the CSR file."""
    reporter = reporter or SilentReporter()
    if config.init not in ("metis", "random"):
        raise ConfigError(f"unknown --init {config.init!r}; expected metis or random")
    data = load_data(run)
    check_sizes(data.n_entities, config.codebook_size, config.per_entity)
    check_anchor_weight(config.anchor_weight, config.per_entity)
    started = time.perf_counter()
    task = reporter.task(f"{config.init} partition into {config.codebook_size} parts", None)
    if config.init == "metis":
        parts = metis_partition(bipartite_adjacency(data.train), config.codebook_size, config.seed)
    else:
        parts = random_partition(data.n_entities, config.codebook_size, config.seed)
    task.close()
    assignment = initial_assignment(
        parts.parts, config.codebook_size, config.per_entity, config.anchor_weight, config.seed
    )
    sizes = np.bincount(parts.parts, minlength=config.codebook_size)
    metrics = {
        "edge_cut": parts.edge_cut,
        "edges": int(data.train.nnz),
        "balance": round(float(sizes.max() / sizes.mean()), 4),
        "empty_parts": int((sizes == 0).sum()),
    }
    digest = run.load_manifest()["dataset"]["fingerprint"]
    tensors = {"parts": parts.parts, **art.csr_arrays("assignment", assignment)}
    meta = art.header("assignment", dataset=digest, **asdict(config))
    out = art.write_tensors(run.file(art.PARTITION_FILE), tensors, meta)
    run.record(
        "partition",
        {
            "config": asdict(config),
            "inputs": run.inputs(art.DATA_FILE),
            "outputs": {art.PARTITION_FILE: out},
            "metrics": metrics,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return metrics


def load_initial_assignment(run: art.RunDir) -> tuple[sp.csr_matrix, dict[str, Any]]:
    entry = run.stage("partition")
    path = run.file(art.PARTITION_FILE)
    tensors, meta = art.read_tensors(path, kind="assignment")
    run.check_dataset(meta, path)
    return art.csr_from_arrays("assignment", tensors).astype(np.float32), entry["config"]


# ----------------------------------------------------------------- training


def _history(logs: list[EpochLog]) -> list[dict[str, Any]]:
    rows = []
    for log in logs:
        row = {
            "epoch": log.epoch,
            "loss": round(log.loss, 6),
            "seconds": round(log.seconds, 3),
            VALIDATION_METRIC: None if log.valid is None else round(log.valid[VALIDATION_METRIC], 6),
            "updated": log.updated,
        }
        if log.nonzeros is not None:
            row["nonzeros"] = log.nonzeros
        rows.append(row)
    return rows


def check_train_config(config: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "negatives", "patience", "eval_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if not math.isfinite(config.lr) or config.lr <= 0:
        raise ConfigError(f"--lr must be a finite number > 0, got {config.lr}")
    if not math.isfinite(config.l2) or config.l2 < 0:
        raise ConfigError(f"--l2 must be a finite number >= 0, got {config.l2}")


def resolve_budget(run: art.RunDir, config: PretrainConfig, n_entities: int) -> tuple[int, str]:
    """The parameter budget of a QR or PEP table, and where it came from.

    An explicit ``--budget`` wins; else the LEGCF configuration of this run's
    partition (c*d + N*t); else the paper's c = 500, t = 2.
    """
    if config.budget is not None:
        budget, source = config.budget, "--budget"
    else:
        partition_entry = run.load_manifest().get("stages", {}).get("partition")
        c, t = 500, 2
        if partition_entry is not None:
            c, t = partition_entry["config"]["codebook_size"], partition_entry["config"]["per_entity"]
        budget = legcf_params(n_entities, config.dim, c, t)
        source = f"LEGCF c={c}, t={t}, d={config.dim}"
    check_budget(budget, n_entities, config.dim)
    return budget, source


def full_table_dim(budget: int, n_entities: int) -> int:
    """The largest d with N*d <= budget."""
    if budget < n_entities:
        raise ConfigError(f"--budget {budget} is below one dimension of a full table ({n_entities} entities)")
    return budget // n_entities


def new_spec(
    config: PretrainConfig,
    n_entities: int,
    budget: int | None,
    assignment: sp.csr_matrix | None,
    part_config: dict[str, Any] | None,
) -> ModelSpec:
    """Freshly initialized tensors of the chosen table and backbone (Xavier, seeded)."""
    seed, dim = config.train.seed, config.dim
    extra: dict[str, str] = {}
    if config.embedding == "legcf":
        tensors = {"codebook": xavier_uniform(part_config["codebook_size"], dim, seed)}
    elif config.embedding in ("full", "pep"):
        tensors = {"weight": xavier_uniform(n_entities, dim, seed)}
        if config.embedding == "pep":
            tensors["threshold"] = torch.full((dim,), PEP_THRESHOLD_INIT)
            extra["budget"] = str(budget)
    else:
        remainders = qr_remainders(n_entities, dim, budget)
        q, r = QRTable.initial(n_entities, dim, remainders, seed)
        tensors = {"quotient": q, "remainder": r}
        extra.update(budget=str(budget), remainders=str(remainders), quotients=str(q.shape[0]))
    backbone = make_backbone(config.backbone, dim, config.layers, seed)
    tensors.update({BACKBONE_PREFIX + k: v.detach().clone() for k, v in backbone.state_dict().items()})
    per_entity = part_config["per_entity"] if part_config else 0
    return ModelSpec(
        config.embedding,
        config.backbone,
        dim,
        config.layers,
        tensors,
        assignment,
        None,
        per_entity,
        seed,
        extra,
    )


def pretrain(
    run: art.RunDir,
    config: PretrainConfig,
    device: torch.device,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train the embedding table with any structure fixed; keep the best on validation NDCG@20.

    For LEGCF that is the codebook with S fixed; for PEP it is the pruning
    phase, which stops once the table fits the budget.
    """
    reporter = reporter or SilentReporter()
    check_train_config(config.train)
    check_choice(config.embedding, config.backbone)
    if config.dim < 1 or config.layers < 0:
        raise ConfigError(f"--dim must be >= 1 and --layers >= 0, got {config.dim} and {config.layers}")
    data = load_data(run)
    assignment = part_config = budget = None
    inputs = [art.DATA_FILE]
    if config.embedding == "legcf":
        assignment, part_config = load_initial_assignment(run)
        inputs.append(art.PARTITION_FILE)
    elif config.embedding in ("qr", "pep"):
        budget, source = resolve_budget(run, config, data.n_entities)
    elif config.budget is not None:  # a full table sized to a budget: the widest that fits
        config = replace(config, dim=full_table_dim(config.budget, data.n_entities))
        reporter.note(f"full table in {config.budget:,} parameters: d = {config.dim}")
    started = time.perf_counter()
    spec = new_spec(config, data.n_entities, budget, assignment, part_config)
    if budget is not None:
        chosen = {k: spec.extra[k] for k in ("remainders", "quotients") if k in spec.extra}
        reporter.note(f"{config.embedding} budget {budget:,} parameters ({source}){_chosen(chosen)}")
    model = build_model(spec, data.train, data.n_users, device)
    extra_entry: dict[str, Any] = {}
    if config.embedding == "pep":
        spec, best_valid, history, reached = _prune_with_progress(
            model, spec, data, config.train, budget, device, reporter
        )
        best_epoch = history[-1].epoch
        extra_entry = {"thresholds_reached_budget": reached}
        if not reached:
            reporter.note(f"thresholds left more than {budget:,} entries; kept the largest {budget:,}")
    else:
        result = _fit_with_progress(model, data, config.train, None, None, reporter, "pretrain")
        spec = with_state(spec, result.best_state, None)
        best_valid, history, best_epoch = result.best_valid, result.history, result.best_epoch
        extra_entry = {"stopped_early": result.stopped_early}
    digest = run.load_manifest()["dataset"]["fingerprint"]
    kind = "codebook" if spec.embedding == "legcf" else "table"
    meta = art.header(kind, dataset=digest, **spec.header())
    out = art.write_tensors(run.file(art.PRETRAIN_FILE), spec.arrays(), meta)
    metrics = {"best_epoch": best_epoch, **_rounded(best_valid), "params": spec.params()}
    run.record(
        "pretrain",
        {
            "config": {
                "dim": config.dim,
                "layers": config.layers,
                "embedding": config.embedding,
                "backbone": config.backbone,
                "budget": budget if budget is not None else config.budget,
                **asdict(config.train),
                "device": str(device),
            },
            "inputs": run.inputs(*inputs),
            "outputs": {art.PRETRAIN_FILE: out},
            "metrics": metrics,
            "history": _history(history),
            **extra_entry,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return metrics


def _chosen(chosen: dict[str, str]) -> str:
    return "" if not chosen else ": " + ", ".join(f"{k} {v}" for k, v in chosen.items())


def _prune_with_progress(
    model: GraphModel,
    spec: ModelSpec,
    data: Interactions,
    config: TrainConfig,
    budget: int,
    device: torch.device,
    reporter: Reporter,
) -> tuple[ModelSpec, dict[str, float], list[EpochLog], bool]:
    """PEP: prune to the budget, then store the surviving entries sparse, with their initial values."""
    epochs, batches, on_batch, on_epoch = _progress(reporter, "prune", config, data.train.nnz)
    try:
        history, reached = prune(model, data.train, data.valid, config, budget, on_batch, on_epoch)
    finally:
        batches.close()
        epochs.close()
    with torch.no_grad():
        pruned = prune_to_budget(model.table(), budget)
    initial = spec.tensors["weight"].numpy()
    coo = pruned.tocoo()
    state = {k: v for k, v in model.state().items() if k.startswith(BACKBONE_PREFIX)}
    state["values"] = torch.from_numpy(pruned.data.copy())
    state["initial_values"] = torch.from_numpy(initial[coo.row, coo.col].astype(np.float32))
    pruned_spec = ModelSpec(
        "pep", spec.backbone, spec.dim, spec.layers, state, None, pruned, 0, spec.seed, dict(spec.extra)
    )
    valid = validate(build_model(pruned_spec, data.train, data.n_users, device), data.train, data.valid)
    return pruned_spec, valid, history, reached


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}


def _progress(reporter: Reporter, label: str, config: TrainConfig, n_positives: int):
    """Epoch and batch bars with the figures a user watches, and the callbacks that feed them."""
    epochs = reporter.task(f"{label} epochs", config.epochs, loss=float("nan"), ndcg=float("nan"))
    batches = reporter.task(
        f"{label} batches", batch_count(n_positives, config.batch_size), loss=float("nan")
    )

    def on_batch(loss: float) -> None:
        batches.advance(1, loss=loss)

    def on_epoch(log: EpochLog) -> None:
        fields: dict[str, Any] = {"loss": log.loss}
        if log.valid is not None:
            fields["ndcg"] = log.valid[VALIDATION_METRIC]
        epochs.advance(1, **fields)
        batches.update(completed=0)
        reporter.log(epoch_line(label, log))

    return epochs, batches, on_batch, on_epoch


def _fit_with_progress(
    model: CodebookModel | GraphModel,
    data: Interactions,
    config: TrainConfig,
    update_every: int | None,
    baseline: tuple[dict[str, float], dict[str, torch.Tensor], sp.csr_matrix | None] | None,
    reporter: Reporter,
    label: str,
) -> TrainResult:
    epochs, batches, on_batch, on_epoch = _progress(reporter, label, config, data.train.nnz)
    try:
        return fit(model, data.train, data.valid, config, update_every, baseline, on_batch, on_epoch)
    finally:
        batches.close()
        epochs.close()


def epoch_line(label: str, log: EpochLog) -> str:
    """One line of training history, e.g. for logs when stderr is not a terminal."""
    parts = [f"{label} epoch {log.epoch}", f"loss {log.loss:.4f}"]
    if log.valid is not None:
        parts.append(f"valid {VALIDATION_METRIC} {log.valid[VALIDATION_METRIC]:.4f}")
    if log.updated:
        parts.append(f"S updated ({log.kept_rows} rows kept)")
    if log.nonzeros is not None:
        parts.append(f"{log.nonzeros:,} entries above threshold")
    parts.append(f"{log.seconds:.1f}s")
    return "  ".join(parts)


def load_trained(
    run: art.RunDir, filename: str, stage: str
) -> tuple[ModelSpec, dict[str, str], dict[str, Any]]:
    """A trained stage's model spec, header and manifest entry, checked intact and up to date."""
    entry = run.stage(stage)
    if not run.is_fresh(stage):
        raise ArtifactError(
            f"{stage} results in {run.path} are older than their inputs; rerun 'legcf {stage}'"
        )
    path = run.file(filename)
    tensors, meta = art.read_tensors(path)
    run.check_dataset(meta, path)
    if stage == "pretrain" and meta.get("embedding", "legcf") == "legcf":
        tensors.update(art.csr_arrays("assignment", load_initial_assignment(run)[0]))
    return spec_from_arrays(tensors, meta, path), meta, entry


def trained_layer(run: art.RunDir) -> tuple[str, str]:
    """The embedding layer and backbone this run's pretrain used (LEGCF on LightGCN
    if none is recorded yet), which pick refine's default lr and batch."""
    try:
        entry = run.load_manifest().get("stages", {}).get("pretrain", {})
    except ArtifactError:
        return "legcf", "lightgcn"  # refine itself reports the missing run
    config = entry.get("config", {})
    return config.get("embedding", "legcf"), config.get("backbone", "lightgcn")


def refine(
    run: art.RunDir,
    config: RefineConfig,
    device: torch.device,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """LEGCF: alternate BPR epochs with assignment updates every m epochs (Algorithm 1).
    PEP: retrain the pruned table's surviving entries from their initial values.

    The result is the best model on validation across pretrain and refine;
    ``kept`` says which, and ``improved`` whether refine beat pretrain.
    """
    reporter = reporter or SilentReporter()
    check_train_config(config.train)
    if config.update_every < 1:
        raise ConfigError(f"--update-every must be >= 1, got {config.update_every}")
    data = load_data(run)
    spec, meta, pretrain_entry = load_trained(run, art.PRETRAIN_FILE, "pretrain")
    if spec.embedding not in ("legcf", "pep"):
        raise ConfigError(
            f"refine updates a LEGCF assignment or retrains a PEP-pruned table; "
            f"this run's --embedding {spec.embedding} has nothing to refine (evaluate its pretrain model)"
        )
    pretrain_valid = {k: v for k, v in pretrain_entry["metrics"].items() if k not in ("best_epoch", "params")}
    started = time.perf_counter()
    baseline = (pretrain_valid, dict(spec.tensors), spec.assignment)
    inputs = [art.DATA_FILE, art.PRETRAIN_FILE]
    if spec.embedding == "legcf":
        inputs.insert(1, art.PARTITION_FILE)
        start = spec
        update_every: int | None = config.update_every
    else:  # PEP retrains from the original initial values, backbone reinitialized
        fresh = make_backbone(spec.backbone, spec.dim, spec.layers, spec.seed).state_dict()
        tensors = {BACKBONE_PREFIX + k: v.detach().clone() for k, v in fresh.items()}
        tensors["values"] = spec.tensors["initial_values"].clone()
        start = with_state(spec, tensors, None)
        update_every = None
    model = build_model(start, data.train, data.n_users, device)
    result = _fit_with_progress(model, data, config.train, update_every, baseline, reporter, "refine")
    improved = result.best_epoch > 0
    if not improved:
        reporter.note(
            f"refine did not beat pretrain on validation {VALIDATION_METRIC} "
            f"({pretrain_valid[VALIDATION_METRIC]:.4f}); keeping the pretrained model"
        )
    best_state = dict(result.best_state)
    if spec.embedding == "pep":
        best_state["initial_values"] = spec.tensors["initial_values"]
    refined = with_state(spec, best_state, result.best_assignment)
    kept = "refine" if improved else "pretrain"
    out_meta = art.header("model", dataset=meta["dataset"], kept=kept, **refined.header())
    out = art.write_tensors(run.file(art.REFINE_FILE), refined.arrays(), out_meta)
    metrics = {"best_epoch": result.best_epoch, **_rounded(result.best_valid)}
    run.record(
        "refine",
        {
            "config": {
                "update_every": config.update_every,
                **asdict(config.train),
                "device": str(device),
            },
            "inputs": run.inputs(*inputs),
            "outputs": {art.REFINE_FILE: out},
            "metrics": metrics,
            "kept": kept,
            "improved": improved,
            "pretrain_" + VALIDATION_METRIC: pretrain_valid[VALIDATION_METRIC],
            "rows_kept_at_update": [log.kept_rows for log in result.history if log.updated],
            "history": _history(result.history),
            "stopped_early": result.stopped_early,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return {**metrics, "kept": kept, "improved": improved}


# ----------------------------------------------------------- trained models


@dataclass
class TrainedModel:
    """A stored model and where it came from."""

    spec: ModelSpec
    stage: str  # the artifact it was read from: pretrain, refine or export
    origin: str  # the stage whose training produced it (refine may keep pretrain's)


def load_model(run: art.RunDir, which: str = "auto", reporter: Reporter | None = None) -> TrainedModel:
    """The refined model if it is up to date (or asked for), else the pretrained one."""
    if which not in ("auto", "pretrain", "refine"):
        raise ConfigError(f"unknown --model {which!r}; expected auto, pretrain or refine")
    if which == "auto":
        which = "pretrain"
        if "refine" in run.load_manifest().get("stages", {}):
            if run.is_fresh("refine"):
                which = "refine"
            elif reporter is not None:
                reporter.note("refine results are older than their inputs; using pretrain's model")
    if which == "refine":
        spec, meta, _ = load_trained(run, art.REFINE_FILE, "refine")
        return TrainedModel(spec, "refine", meta["kept"])
    spec, _, _ = load_trained(run, art.PRETRAIN_FILE, "pretrain")
    return TrainedModel(spec, "pretrain", "pretrain")


def propagated_embeddings(
    train: sp.csr_matrix, n_users: int, spec: ModelSpec, device: torch.device
) -> torch.Tensor:
    """The propagated rows of all entities: what scoring uses."""
    model = build_model(spec, train, n_users, device)
    with torch.no_grad():
        return model.entity_embeddings()


# -------------------------------------------------------------------- evaluate


def evaluate_run(
    run: art.RunDir,
    split: str = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
    which: str = "auto",
    device: torch.device = CPU,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Recall@K and NDCG@K of the run's model on ``valid`` or ``test``."""
    reporter = reporter or SilentReporter()
    if split not in ("valid", "test"):
        raise ConfigError(f"unknown split {split!r}; expected valid or test")
    if not ks or min(ks) < 1:
        raise ConfigError(f"every K must be >= 1, got {list(ks)}")
    data = load_data(run)
    model = load_model(run, which, reporter)
    started = time.perf_counter()
    h = propagated_embeddings(data.train, data.n_users, model.spec, device)
    truth = data.split(split)
    n_eval = int((np.diff(truth.indptr) > 0).sum())
    task = reporter.task(f"evaluating {split}", n_eval)
    metrics = evaluate(
        h[: data.n_users], h[data.n_users :], data.train, truth, ks, on_block=lambda n: task.advance(n)
    )
    task.close()
    seconds = round(time.perf_counter() - started, 3)
    result = {
        "split": split,
        "model": model.stage,
        "trained_by": model.origin,
        **_rounded(metrics),
        "seconds": seconds,
    }
    manifest = run.load_manifest()
    evaluations = dict(manifest.get("stages", {}).get("evaluate", {}).get("results", {}))
    model_file = art.REFINE_FILE if model.stage == "refine" else art.PRETRAIN_FILE
    evaluations[f"{model.stage}/{split}"] = {**result, "inputs": run.inputs(model_file)}
    run.record("evaluate", {"results": evaluations, "inputs": {}, "outputs": {}})
    return result


# ---------------------------------------------------------- export / inspect


def export(run: art.RunDir, output: Path | None = None, which: str = "auto") -> dict[str, Any]:
    """One self-contained safetensors file: embedding layer, backbone weights, the graph to score with."""
    data = load_data(run)
    model = load_model(run, which)
    spec = model.spec
    output = Path(output) if output is not None else run.file(art.EXPORT_FILE)
    digest = run.load_manifest()["dataset"]["fingerprint"]
    meta = art.header(
        "export",
        dataset=digest,
        n_users=data.n_users,
        n_items=data.n_items,
        params=spec.params(),
        made_by=model.origin,
        **spec.header(),
    )
    arrays = spec.arrays()
    arrays.pop("initial_values", None)  # only retraining needs these
    tensors = {
        **arrays,
        **art.csr_arrays("train", data.train, with_data=False),
        "user_ids": data.user_ids,
        "item_ids": data.item_ids,
    }
    digest_out = art.write_tensors(output, tensors, meta)
    result = {
        "path": str(output),
        "bytes": output.stat().st_size,
        "params": spec.params(),
        "embedding_bytes": spec.bytes(),
        "embedding": spec.embedding,
        "backbone": spec.backbone,
        "model": model.stage,
    }
    run.record(
        "export",
        {
            "inputs": run.inputs(art.DATA_FILE),
            "outputs": {},
            "file": str(output),
            "sha256": digest_out,
            "metrics": result,
        },
    )
    return result


@dataclass
class ExportedModel:
    """A model read back from ``legcf export``: enough to score every user."""

    spec: ModelSpec
    train: sp.csr_matrix
    n_users: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    origin: str

    def embeddings(self, device: torch.device = CPU) -> torch.Tensor:
        return propagated_embeddings(self.train, self.n_users, self.spec, device)


def load_export(path: Path) -> ExportedModel:
    tensors, meta = art.read_tensors(Path(path), kind="export")
    return ExportedModel(
        spec_from_arrays(tensors, meta, path),
        art.csr_from_arrays("train", tensors).astype(np.float32),
        int(meta["n_users"]),
        tensors["user_ids"],
        tensors["item_ids"],
        meta["made_by"],
    )


def describe_table(spec: ModelSpec, n_users: int, n_entities: int) -> dict[str, Any]:
    """The inspect summary of a full, QR or PEP table (same keys as LEGCF's where they apply)."""
    params, full = spec.params(), n_entities * spec.dim
    summary: dict[str, Any] = {
        "embedding": spec.embedding,
        "backbone": spec.backbone,
        "entities": n_entities,
        "users": n_users,
        "items": n_entities - n_users,
        "dim": spec.dim,
        "params": params,
        "full_table_params": full,
        "compression_ratio": round(full / params, 2) if params else None,
        "bytes": spec.bytes(),
        "full_table_bytes": 4 * full,
    }
    if spec.embedding == "full":
        summary.update(buckets=n_entities, per_entity=1)
    elif spec.embedding == "qr":
        summary.update(
            buckets=int(spec.tensors["quotient"].shape[0] + spec.tensors["remainder"].shape[0]),
            per_entity=2,
            quotients=int(spec.tensors["quotient"].shape[0]),
            remainders=int(spec.tensors["remainder"].shape[0]),
        )
    else:
        per_row = np.diff(spec.pattern.indptr)
        summary.update(
            buckets=n_entities,
            per_entity=1,
            nnz=int(spec.pattern.nnz),
            density=round(spec.pattern.nnz / full, 6),
            nonzeros_per_row={
                "min": int(per_row.min()),
                "mean": round(float(per_row.mean()), 3),
                "max": int(per_row.max()),
            },
            empty_rows=int((per_row == 0).sum()),
        )
    return summary


def describe_model(
    spec: ModelSpec, n_users: int, n_entities: int, parts: np.ndarray | None
) -> dict[str, Any]:
    if spec.embedding != "legcf":
        return describe_table(spec, n_users, n_entities)
    summary = {"embedding": "legcf", "backbone": spec.backbone}
    return {**summary, **describe(tuple(spec.codebook.shape), spec.assignment, n_users, parts)}


def inspect_path(path: Path, which: str = "auto") -> dict[str, Any]:
    """Describe a run directory's model or an exported model file."""
    path = Path(path)
    if path.is_dir():
        run = art.RunDir(path)
        data = load_data(run)
        model = load_model(run, which)
        parts = None
        if model.spec.embedding == "legcf" and model.origin == "pretrain":
            # S is still S0: its anchors are the partition's parts
            parts = art.read_tensors(run.file(art.PARTITION_FILE), kind="assignment")[0]["parts"]
        summary = describe_model(model.spec, data.n_users, data.n_entities, parts)
        summary["source"] = f"run:{model.stage}"
        if model.spec.embedding == "legcf":
            partition_entry = run.load_manifest()["stages"].get("partition", {})
            summary["partition"] = {
                "init": partition_entry.get("config", {}).get("init"),
                **partition_entry.get("metrics", {}),
            }
        return summary
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; give a run directory or an exported model file")
    exported = load_export(path)
    n_entities = exported.train.shape[0] + exported.train.shape[1]
    summary = describe_model(exported.spec, exported.n_users, n_entities, None)
    summary["source"] = "export"
    summary["file_bytes"] = path.stat().st_size
    return summary


# ------------------------------------------------------------------------ run


def run_all(
    run: art.RunDir,
    data_path: Path,
    partition_config: PartitionConfig,
    pretrain_config: PretrainConfig,
    refine_config: RefineConfig,
    device: torch.device,
    test_fraction: float = 0.2,
    reporter: Reporter | None = None,
    match_budget: bool = False,
) -> dict[str, Any]:
    """Every stage that applies to the chosen embedding, then test metrics and an export.

    LEGCF runs partition, pretrain and refine; PEP pretrain (pruning) and
    refine (retraining); full and QR tables pretrain only. A QR or PEP table
    without ``budget`` gets LEGCF's at the partition config's c and t, and so
    does a full table with ``match_budget`` (its d is then solved for).
    """
    reporter = reporter or SilentReporter()
    embedding = pretrain_config.embedding
    check_choice(embedding, pretrain_config.backbone)
    prepared = prepare(run, data_path, partition_config.seed, test_fraction, reporter)
    if embedding == "legcf":
        partition(run, partition_config, reporter)
    elif pretrain_config.budget is None and (embedding in ("qr", "pep") or match_budget):
        entities = prepared["users"] + prepared["items"]
        check_sizes(entities, partition_config.codebook_size, partition_config.per_entity)
        budget = legcf_params(
            entities, pretrain_config.dim, partition_config.codebook_size, partition_config.per_entity
        )
        pretrain_config = replace(pretrain_config, budget=budget)
    pretrain(run, pretrain_config, device, reporter)
    kept = "pretrain"
    if embedding in ("legcf", "pep"):
        kept = refine(run, refine_config, device, reporter)["kept"]
    result = evaluate_run(run, "test", (10, 20), "auto", device, reporter)
    exported = export(run)
    return {
        **result,
        "embedding": embedding,
        "backbone": pretrain_config.backbone,
        "kept": kept,
        "params": exported["params"],
        "embedding_bytes": exported["embedding_bytes"],
        "model_file_bytes": exported["bytes"],
    }
