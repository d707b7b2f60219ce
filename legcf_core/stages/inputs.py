"""What stages read from a run directory, each checked intact, up to date and of this dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from legcf_core import artifacts as art
from legcf_core.config import check_model_choice
from legcf_core.data import Interactions
from legcf_core.errors import ArtifactError
from legcf_core.model import StoredModel, stored_model_from_arrays
from legcf_core.progress import Reporter

SPLITS = ("train", "valid", "test")


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


def load_initial_assignment(run: art.RunDir) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """S0 and the partition stage's config."""
    entry = run.stage("partition")
    path = run.file(art.PARTITION_FILE)
    tensors, meta = art.read_tensors(path, kind="assignment")
    run.check_dataset(meta, path)
    return art.csr_from_arrays("assignment", tensors).astype(np.float32), entry["config"]


def load_partition_parts(run: art.RunDir) -> np.ndarray:
    """Each entity's METIS (or random) part: its anchor in S0."""
    return art.read_tensors(run.file(art.PARTITION_FILE), kind="assignment")[0]["parts"]


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
    if stage == "pretrain" and model.layer.uses_partition:  # pretrain trains with S0 fixed
        model.layer.set_assignment(load_initial_assignment(run)[0])
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
