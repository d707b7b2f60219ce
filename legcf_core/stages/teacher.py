"""The teacher of ``partition --init teacher``: a trained run on the same data, whose layer-0
rows LEGCF's start is coded from (:mod:`legcf_core.table_coding`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from legcf_core import artifacts as art
from legcf_core.config import PartitionConfig
from legcf_core.errors import ArtifactError, ConfigError
from legcf_core.stages.inputs import load_model


@dataclass
class Teacher:
    """The rows to code and where they came from (recorded with the partition)."""

    rows: torch.Tensor  # N x d, the teacher's layer-0 rows of every entity
    path: Path
    source: str  # the teacher's stage whose model was read: pretrain or refine
    embedding: str
    digest: str  # sha256 of that stage's model file

    def record(self) -> dict[str, Any]:
        return {
            "run": str(self.path.resolve()),
            "stage": self.source,
            "embedding": self.embedding,
            "dim": int(self.rows.shape[1]),
            "model_sha256": self.digest,
        }


def load_teacher(run: art.RunDir, config: PartitionConfig, n_entities: int) -> Teacher:
    """The teacher run's model, checked to be trained on this run's very data (the same split,
    so its early stopping never saw this run's test) and as wide as the codebook will be."""
    assert config.teacher is not None
    path = Path(config.teacher)
    if path.resolve() == run.path.resolve():
        raise ConfigError("teacher", "is this run directory; give another run, trained on the same data")
    teacher_run = art.RunDir(path)
    theirs = teacher_run.load_manifest().get("dataset", {}).get("fingerprint")
    ours = run.load_manifest()["dataset"]["fingerprint"]
    if theirs != ours:
        raise ArtifactError(
            f"teacher {path} was trained on dataset {str(theirs)[:12]}, this run's is {ours[:12]}; "
            "prepare both with the same data, split and --seed"
        )
    chosen = load_model(teacher_run, "auto", n_entities)
    with torch.no_grad():
        rows = chosen.model.layer()[:n_entities].detach().float().cpu()
    if config.dim is not None and rows.shape[1] != config.dim:
        width = rows.shape[1]
        raise ConfigError("dim", f"is {config.dim}, the teacher's rows are {width} wide; give --dim {width}")
    if not torch.isfinite(rows).all():
        raise ArtifactError(f"teacher {path} holds non-finite embeddings")
    digest = art.sha256_file(teacher_run.file(art.STAGE_FILES[chosen.source]))
    return Teacher(rows, path, chosen.source, chosen.model.embedding, digest)
