"""The pipeline stages: each reads earlier artifacts from a run directory,
calls the engine, and writes its own artifacts and manifest entry.

The CLI is a thin layer over these functions; they report progress through a
:class:`~legcf_core.progress.Reporter` and never print.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.data import Interactions, dataset_files, load_dataset
from legcf_core.errors import ArtifactError, ConfigError
from legcf_core.evaluation import DEFAULT_KS, evaluate
from legcf_core.graph import bipartite_adjacency
from legcf_core.inspection import describe, embedding_bytes, embedding_params
from legcf_core.model import CodebookModel
from legcf_core.partition import (
    check_anchor_weight,
    check_sizes,
    initial_assignment,
    metis_partition,
    random_partition,
)
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.training import (
    VALIDATION_METRIC,
    EpochLog,
    TrainConfig,
    TrainResult,
    batch_count,
    fit,
)

SPLITS = ("train", "valid", "test")
CPU = torch.device("cpu")


# ------------------------------------------------------------------ configs


@dataclass(frozen=True)
class PartitionConfig:
    codebook_size: int = 500
    per_entity: int = 2
    anchor_weight: float = 0.5
    init: str = "metis"
    seed: int = 2024


@dataclass(frozen=True)
class PretrainConfig:
    dim: int = 128
    layers: int = 3
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class RefineConfig:
    """Refine keeps a constant learning rate by default: each assignment update
    first costs validation accuracy, and decaying lr on those epochs left the
    codebook unable to recover (docs/design.md)."""

    update_every: int = 1
    train: TrainConfig = TrainConfig(epochs=30, lr_decay=1.0)


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


def xavier_codebook(codebook_size: int, dim: int, seed: int) -> torch.Tensor:
    """E_meta drawn with Xavier (Glorot) uniform initialization, as in the paper."""
    generator = torch.Generator().manual_seed(seed)
    bound = (6.0 / (codebook_size + dim)) ** 0.5
    return (torch.rand(codebook_size, dim, generator=generator) * 2 - 1) * bound


def _history(result: TrainResult) -> list[dict[str, Any]]:
    return [
        {
            "epoch": log.epoch,
            "loss": round(log.loss, 6),
            "seconds": round(log.seconds, 3),
            VALIDATION_METRIC: None if log.valid is None else round(log.valid[VALIDATION_METRIC], 6),
            "updated": log.updated,
        }
        for log in result.history
    ]


def check_train_config(config: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "negatives", "patience", "eval_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if not math.isfinite(config.lr) or config.lr <= 0:
        raise ConfigError(f"--lr must be a finite number > 0, got {config.lr}")
    if not math.isfinite(config.l2) or config.l2 < 0:
        raise ConfigError(f"--l2 must be a finite number >= 0, got {config.l2}")


def pretrain(
    run: art.RunDir,
    config: PretrainConfig,
    device: torch.device,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Learn E_meta with S fixed; keep the codebook best on validation NDCG@20."""
    reporter = reporter or SilentReporter()
    check_train_config(config.train)
    if config.dim < 1 or config.layers < 0:
        raise ConfigError(f"--dim must be >= 1 and --layers >= 0, got {config.dim} and {config.layers}")
    data = load_data(run)
    assignment, part_config = load_initial_assignment(run)
    started = time.perf_counter()
    codebook = xavier_codebook(part_config["codebook_size"], config.dim, config.train.seed)
    model = CodebookModel(
        bipartite_adjacency(data.train),
        data.n_users,
        assignment,
        codebook,
        part_config["per_entity"],
        config.layers,
        device,
    )
    result = _fit_with_progress(model, data, config.train, None, None, reporter, "pretrain")
    digest = run.load_manifest()["dataset"]["fingerprint"]
    meta = art.header(
        "codebook",
        dataset=digest,
        dim=config.dim,
        layers=config.layers,
        codebook_size=part_config["codebook_size"],
        per_entity=part_config["per_entity"],
    )
    out = art.write_tensors(run.file(art.PRETRAIN_FILE), {"codebook": result.best_codebook.numpy()}, meta)
    metrics = {"best_epoch": result.best_epoch, **_rounded(result.best_valid)}
    run.record(
        "pretrain",
        {
            "config": {
                "dim": config.dim,
                "layers": config.layers,
                **asdict(config.train),
                "device": str(device),
            },
            "inputs": run.inputs(art.DATA_FILE, art.PARTITION_FILE),
            "outputs": {art.PRETRAIN_FILE: out},
            "metrics": metrics,
            "history": _history(result),
            "stopped_early": result.stopped_early,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return metrics


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}


def _fit_with_progress(
    model: CodebookModel,
    data: Interactions,
    config: TrainConfig,
    update_every: int | None,
    baseline: tuple[dict[str, float], torch.Tensor, sp.csr_matrix] | None,
    reporter: Reporter,
    label: str,
) -> TrainResult:
    n_batches = batch_count(data.train.nnz, config.batch_size)
    epochs = reporter.task(f"{label} epochs", config.epochs, loss=float("nan"), ndcg=float("nan"))
    batches = reporter.task(f"{label} batches", n_batches, loss=float("nan"))

    def on_batch(loss: float) -> None:
        batches.advance(1, loss=loss)

    def on_epoch(log: EpochLog) -> None:
        fields: dict[str, Any] = {"loss": log.loss}
        if log.valid is not None:
            fields["ndcg"] = log.valid[VALIDATION_METRIC]
        epochs.advance(1, **fields)
        batches.update(completed=0)
        reporter.log(epoch_line(label, log))

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
    parts.append(f"{log.seconds:.1f}s")
    return "  ".join(parts)


def load_codebook(
    run: art.RunDir, filename: str, stage: str
) -> tuple[torch.Tensor, dict[str, str], dict[str, np.ndarray], dict[str, Any]]:
    """A trained stage's tensors, header and manifest entry, checked intact and up to date."""
    entry = run.stage(stage)
    if not run.is_fresh(stage):
        raise ArtifactError(
            f"{stage} results in {run.path} are older than their inputs; rerun 'legcf {stage}'"
        )
    path = run.file(filename)
    tensors, meta = art.read_tensors(path)
    run.check_dataset(meta, path)
    return torch.from_numpy(tensors["codebook"].copy()), meta, tensors, entry


def refine(
    run: art.RunDir,
    config: RefineConfig,
    device: torch.device,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Alternate BPR epochs with assignment updates every m epochs (Algorithm 1).

    The result is the best model on validation across pretrain and refine;
    ``kept`` says which, and ``improved`` whether refine beat pretrain.
    """
    reporter = reporter or SilentReporter()
    check_train_config(config.train)
    if config.update_every < 1:
        raise ConfigError(f"--update-every must be >= 1, got {config.update_every}")
    data = load_data(run)
    assignment, part_config = load_initial_assignment(run)
    codebook, meta, _, pretrain_entry = load_codebook(run, art.PRETRAIN_FILE, "pretrain")
    pretrain_valid = pretrain_entry["metrics"]
    started = time.perf_counter()
    layers = int(meta["layers"])
    model = CodebookModel(
        bipartite_adjacency(data.train),
        data.n_users,
        assignment,
        codebook,
        part_config["per_entity"],
        layers,
        device,
    )
    baseline = ({k: v for k, v in pretrain_valid.items() if k != "best_epoch"}, codebook, assignment)
    result = _fit_with_progress(model, data, config.train, config.update_every, baseline, reporter, "refine")
    improved = result.best_epoch > 0
    if not improved:
        reporter.note(
            f"refine did not beat pretrain on validation {VALIDATION_METRIC} "
            f"({pretrain_valid[VALIDATION_METRIC]:.4f}); keeping the pretrained model"
        )
    out_meta = art.header(
        "model",
        dataset=meta["dataset"],
        dim=meta["dim"],
        layers=layers,
        codebook_size=part_config["codebook_size"],
        per_entity=part_config["per_entity"],
        kept="refine" if improved else "pretrain",
    )
    tensors = {
        "codebook": result.best_codebook.numpy(),
        **art.csr_arrays("assignment", result.best_assignment),
    }
    out = art.write_tensors(run.file(art.REFINE_FILE), tensors, out_meta)
    metrics = {"best_epoch": result.best_epoch, **_rounded(result.best_valid)}
    run.record(
        "refine",
        {
            "config": {
                "update_every": config.update_every,
                **asdict(config.train),
                "device": str(device),
            },
            "inputs": run.inputs(art.DATA_FILE, art.PARTITION_FILE, art.PRETRAIN_FILE),
            "outputs": {art.REFINE_FILE: out},
            "metrics": metrics,
            "kept": "refine" if improved else "pretrain",
            "improved": improved,
            "pretrain_" + VALIDATION_METRIC: pretrain_valid[VALIDATION_METRIC],
            "rows_kept_at_update": [log.kept_rows for log in result.history if log.updated],
            "history": _history(result),
            "stopped_early": result.stopped_early,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return {**metrics, "kept": "refine" if improved else "pretrain", "improved": improved}


# ----------------------------------------------------------- trained models


@dataclass
class TrainedModel:
    """A codebook, its assignment and the graph facts needed to score."""

    codebook: torch.Tensor
    assignment: sp.csr_matrix
    per_entity: int
    layers: int
    stage: str  # the artifact it was read from: pretrain, refine or export
    origin: str  # the stage whose training produced it (refine may keep pretrain's)

    @property
    def dim(self) -> int:
        return int(self.codebook.shape[1])


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
        codebook, meta, tensors, _ = load_codebook(run, art.REFINE_FILE, "refine")
        assignment = art.csr_from_arrays("assignment", tensors).astype(np.float32)
        return TrainedModel(
            codebook, assignment, int(meta["per_entity"]), int(meta["layers"]), "refine", meta["kept"]
        )
    codebook, meta, _, _ = load_codebook(run, art.PRETRAIN_FILE, "pretrain")
    assignment, _ = load_initial_assignment(run)
    return TrainedModel(
        codebook, assignment, int(meta["per_entity"]), int(meta["layers"]), "pretrain", "pretrain"
    )


def propagated_embeddings(
    train: sp.csr_matrix, n_users: int, model: TrainedModel, device: torch.device
) -> torch.Tensor:
    """H_full of a trained model: what scoring uses."""
    codebook_model = CodebookModel(
        bipartite_adjacency(train),
        n_users,
        model.assignment,
        model.codebook,
        model.per_entity,
        model.layers,
        device,
    )
    with torch.no_grad():
        return codebook_model.entity_embeddings()


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
    h = propagated_embeddings(data.train, data.n_users, model, device)
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
    """One self-contained safetensors file: codebook, S, and the graph scoring needs."""
    data = load_data(run)
    model = load_model(run, which)
    output = Path(output) if output is not None else run.file(art.EXPORT_FILE)
    params = embedding_params(tuple(model.codebook.shape), model.assignment)
    digest = run.load_manifest()["dataset"]["fingerprint"]
    meta = art.header(
        "export",
        dataset=digest,
        layers=model.layers,
        n_users=data.n_users,
        n_items=data.n_items,
        dim=model.dim,
        codebook_size=model.codebook.shape[0],
        per_entity=model.per_entity,
        params=params,
        made_by=model.origin,
    )
    tensors = {
        "codebook": model.codebook.numpy(),
        **art.csr_arrays("assignment", model.assignment),
        **art.csr_arrays("train", data.train, with_data=False),
        "user_ids": data.user_ids,
        "item_ids": data.item_ids,
    }
    digest_out = art.write_tensors(output, tensors, meta)
    result = {
        "path": str(output),
        "bytes": output.stat().st_size,
        "params": params,
        "embedding_bytes": embedding_bytes(tuple(model.codebook.shape), model.assignment),
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

    codebook: torch.Tensor
    assignment: sp.csr_matrix
    train: sp.csr_matrix
    per_entity: int
    layers: int
    n_users: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    origin: str

    def embeddings(self, device: torch.device = CPU) -> torch.Tensor:
        model = TrainedModel(
            self.codebook, self.assignment, self.per_entity, self.layers, "export", self.origin
        )
        return propagated_embeddings(self.train, self.n_users, model, device)


def load_export(path: Path) -> ExportedModel:
    tensors, meta = art.read_tensors(Path(path), kind="export")
    return ExportedModel(
        torch.from_numpy(tensors["codebook"].copy()),
        art.csr_from_arrays("assignment", tensors).astype(np.float32),
        art.csr_from_arrays("train", tensors).astype(np.float32),
        int(meta["per_entity"]),
        int(meta["layers"]),
        int(meta["n_users"]),
        tensors["user_ids"],
        tensors["item_ids"],
        meta["made_by"],
    )


def inspect_path(path: Path, which: str = "auto") -> dict[str, Any]:
    """Describe a run directory's model or an exported model file."""
    path = Path(path)
    if path.is_dir():
        run = art.RunDir(path)
        data = load_data(run)
        model = load_model(run, which)
        parts = None
        if model.origin == "pretrain":  # S is still S0: its anchors are the partition's parts
            parts = art.read_tensors(run.file(art.PARTITION_FILE), kind="assignment")[0]["parts"]
        summary = describe(tuple(model.codebook.shape), model.assignment, data.n_users, parts)
        summary["source"] = f"run:{model.stage}"
        partition_entry = run.load_manifest()["stages"].get("partition", {})
        summary["partition"] = {
            "init": partition_entry.get("config", {}).get("init"),
            **partition_entry.get("metrics", {}),
        }
        return summary
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; give a run directory or an exported model file")
    exported = load_export(path)
    summary = describe(tuple(exported.codebook.shape), exported.assignment, exported.n_users)
    summary["source"] = "export"
    summary["file_bytes"] = path.stat().st_size
    return summary
