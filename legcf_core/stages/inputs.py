"""What stages read from a run directory, each checked intact, up to date and of this dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from legcf_core import artifacts as art
from legcf_core.config import VALIDATIONS, check_model_choice
from legcf_core.data import Interactions
from legcf_core.errors import ArtifactError, ConfigError
from legcf_core.model import StoredModel, stored_model_from_arrays
from legcf_core.progress import Reporter
from legcf_core.tokens import read_ids

SPLITS = ("train", "valid", "test")
CODEBOOK_TENSOR = "codebook"
"""The partition file's starting codebook (c x d, float32), there only when a teacher was coded."""


def load_data(run: art.RunDir) -> Interactions:
    """The run's prepared interactions, checked against the manifest and for shape."""
    run.stage("prepare")
    path = run.file(art.DATA_FILE)
    tensors, meta = art.read_tensors(path, kind="interactions")
    run.check_dataset(meta, path)
    with art.checked(path):
        return interactions_from_arrays(tensors, meta)


def interactions_from_arrays(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> Interactions:
    """Inverse of what prepare writes: three U x I CSR splits and the raw ids."""
    n_users, n_items = art.header_int(meta, "n_users", 1), art.header_int(meta, "n_items", 1)
    user_ids = read_ids(tensors, "user_ids", n_users)
    item_ids = read_ids(tensors, "item_ids", n_items)
    splits = {
        name: art.csr_from_arrays(name, tensors, (n_users, n_items), with_data=False).astype(np.float32)
        for name in SPLITS
    }
    validation = meta.get("validation", "test-third")  # files from before the choice: the paper's
    art.header_choice({"validation": validation}, "validation", VALIDATIONS)
    return Interactions(
        splits["train"], splits["valid"], splits["test"], user_ids, item_ids, validation=validation
    )


def load_initial_assignment(run: art.RunDir, n_entities: int) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """S0 (N x c) and the partition stage's config."""
    entry = run.stage("partition")
    tensors, meta = _read_partition(run)
    with art.checked(run.file(art.PARTITION_FILE)):
        c = art.header_int(meta, "codebook_size", 1, n_entities)
        assignment = art.csr_from_arrays("assignment", tensors, (n_entities, c), with_data=True)
    return assignment.astype(np.float32), entry["config"]


def load_initial_codebook(run: art.RunDir, codebook_size: int, dim: int) -> np.ndarray | None:
    """The starting codebook M0 (c x d) a teacher's coding left in the partition file; None
    after METIS or random anchors, whose codebook starts random."""
    tensors, meta = _read_partition(run)
    if CODEBOOK_TENSOR not in tensors:
        return None
    path = run.file(art.PARTITION_FILE)
    with art.checked(path):
        width = art.header_int(meta, "dim", 1)
        codebook = art.require(tensors, CODEBOOK_TENSOR, "float32", (codebook_size, width))
    if width != dim:
        raise ConfigError(
            "dim", f"is {dim}, the partition's starting codebook is {width} wide; give --dim {width}"
        )
    return np.array(codebook)


def load_partition_parts(run: art.RunDir, n_entities: int) -> np.ndarray:
    """Each entity's METIS (or random) part: its anchor in S0."""
    tensors, meta = _read_partition(run)
    with art.checked(run.file(art.PARTITION_FILE)):
        parts = art.require(tensors, "parts", "int64", (n_entities,))
        c = art.header_int(meta, "codebook_size", 1)
        if parts.size and (parts.min() < 0 or parts.max() >= c):
            raise art.Malformed(f"tensor 'parts' holds parts outside 0..{c - 1}")
    return parts


def _read_partition(run: art.RunDir) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    path = run.file(art.PARTITION_FILE)
    tensors, meta = art.read_tensors(path, kind="assignment")
    run.check_dataset(meta, path)
    return tensors, meta


def load_trained(
    run: art.RunDir, stage: str, n_entities: int
) -> tuple[StoredModel, dict[str, str], dict[str, Any]]:
    """A training stage's model, its file header and its manifest entry."""
    entry = run.stage(stage)
    if not run.is_fresh(stage):
        raise ArtifactError(
            f"{stage} results in {run.path} are older than their inputs; rerun 'legcf {stage}'"
        )
    path = run.file(art.STAGE_FILES[stage])
    tensors, meta = art.read_tensors(path)
    run.check_dataset(meta, path)
    model = stored_model_from_arrays(tensors, meta, path, n_entities)
    if stage == "refine":
        with art.checked(path):
            art.header_choice(meta, "kept", ("pretrain", "refine"))
    if stage == "pretrain" and model.layer.uses_partition:  # pretrain trains with S0 fixed
        initial = load_initial_assignment(run, n_entities)[0]
        if initial.shape != model.layer.assignment.shape:
            raise ArtifactError(
                f"{path} has {model.layer.assignment.shape[1]} meta-embeddings, the partition "
                f"{initial.shape[1]}; rerun 'legcf pretrain'"
            )
        model.layer.set_assignment(initial)
    return model, meta, entry


@dataclass
class ChosenModel:
    """A stored model and where it came from."""

    model: StoredModel
    source: str  # the artifact it was read from: pretrain or refine
    trained_by: str  # the stage whose training produced it (refine may keep pretrain's)


def load_model(run: art.RunDir, which: str, n_entities: int, reporter: Reporter | None = None) -> ChosenModel:
    """The refined model if it is up to date (or asked for), else the pretrained one."""
    check_model_choice(which)
    if which == "auto":
        which = "pretrain"
        if "refine" in run.load_manifest().get("stages", {}):
            if run.is_fresh("refine"):
                which = "refine"
            elif reporter is not None:
                reporter.note("refine results are older than their inputs; using pretrain's model")
    model, meta, _ = load_trained(run, which, n_entities)
    return ChosenModel(model, which, meta["kept"] if which == "refine" else "pretrain")


def trained_layer(run: art.RunDir) -> tuple[str, str]:
    """The embedding layer and backbone this run's pretrain used (LEGCF on LightGCN
    if none is recorded yet), which pick refine's tuned lr and batch."""
    try:
        entry = run.load_manifest().get("stages", {}).get("pretrain", {})
    except ArtifactError:
        return "legcf", "lightgcn"  # refine itself reports the missing run
    config = entry.get("config", {})
    return config.get("embedding", "legcf"), config.get("backbone", "lightgcn")
