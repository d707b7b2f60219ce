"""Inspect: parameters, bytes, sparsity and meta-embedding usage of a run's model or an export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from legcf_core import artifacts as art
from legcf_core.errors import ArtifactError
from legcf_core.model import StoredModel
from legcf_core.stages.export import load_export
from legcf_core.stages.inputs import load_data, load_model, load_partition_parts


def summary(model: StoredModel, n_users: int) -> dict[str, Any]:
    return {"embedding": model.embedding, "backbone": model.backbone_name, **model.layer.describe(n_users)}


def inspect_path(path: Path, which: str = "auto") -> dict[str, Any]:
    """Describe a run directory's model or an exported model file."""
    path = Path(path)
    if path.is_dir():
        return inspect_run(art.RunDir(path), which)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; give a run directory or an exported model file")
    exported = load_export(path)
    result = summary(exported.model, exported.n_users)
    result["source"] = "export"
    result["file_bytes"] = path.stat().st_size
    return result


def inspect_run(run: art.RunDir, which: str) -> dict[str, Any]:
    data = load_data(run)
    chosen = load_model(run, which, data.n_entities)
    layer = chosen.model.layer
    if layer.uses_partition and chosen.trained_by == "pretrain":
        # S is still S0: its anchors are the parts
        layer.known_anchors = load_partition_parts(run, data.n_entities)
    result = summary(chosen.model, data.n_users)
    result["source"] = f"run:{chosen.source}"
    if layer.uses_partition:
        partition_entry = run.load_manifest()["stages"].get("partition", {})
        result["partition"] = {
            "init": partition_entry.get("config", {}).get("init"),
            **partition_entry.get("metrics", {}),
        }
    return result
