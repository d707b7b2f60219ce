"""Inspect: parameters, bytes, sparsity and meta-embedding usage of a run's model, an export or a
compact model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from legcf_core import artifacts as art
from legcf_core.errors import ArtifactError
from legcf_core.model import StoredModel
from legcf_core.stages.export import load_export
from legcf_core.stages.export_compact import parse_compact
from legcf_core.stages.inputs import load_data, load_model, load_partition_parts


def summary(model: StoredModel, n_users: int) -> dict[str, Any]:
    described = model.layer.describe(n_users)
    return {
        "embedding": model.embedding,
        "backbone": model.backbone_name,
        **described,
        "backbone_params": model.backbone_params(),
    }


def inspect_path(path: Path, which: str = "auto") -> dict[str, Any]:
    """Describe a run directory's model or an exported model file."""
    path = Path(path)
    if path.is_dir():
        return inspect_run(art.RunDir(path), which)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; give a run directory or an exported model file")
    if art.read_metadata(path).get("kind") == "compact":
        return inspect_compact(path)
    exported = load_export(path)
    result = summary(exported.model, exported.n_users)
    result["source"] = "export"
    result["file_bytes"] = path.stat().st_size
    return result


def inspect_compact(path: Path) -> dict[str, Any]:
    """What a compact file holds: its form, precision and sizes (checked as ``load`` checks it)."""
    tensors, meta = art.read_tensors(path, kind="compact")
    with art.checked(path):
        file = parse_compact(tensors, meta)
    parts = {name: int(array.nbytes) for name, array in sorted(tensors.items())}
    return {
        "embedding": meta.get("embedding"),
        "backbone": meta.get("backbone"),
        "source": "compact",
        "users": file.n_users,
        "items": file.n_items,
        "dtype": meta["dtype"],
        "codes": int(meta.get("codes", 0)) or None,
        "seen_items": file.seen is not None,
        "params": file.params(),
        "folded_users": int(meta.get("folded_users", 0)),
        "folded_items": int(meta.get("folded_items", 0)),
        "file_bytes": path.stat().st_size,
        "tensor_bytes": parts,
    }


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
        codebook = partition_entry.get("codebook", {})
        result["partition"] = {
            "init": partition_entry.get("config", {}).get("init"),
            **partition_entry.get("metrics", {}),
            # which c and why (runs partitioned before c was sized to the data: given by -c)
            "codebook_size": partition_entry.get("config", {}).get("codebook_size"),
            "chosen_by": codebook.get("chosen_by", "given"),
            "why": codebook.get("reason", "given by -c"),
            # which d and why (runs partitioned before d was chosen from the data: as given)
            "width": partition_entry.get("width", {"dim": result.get("dim"), "chosen_by": "given"}),
            # which start and why (runs partitioned before --init auto: as given)
            "start": partition_entry.get(
                "start", {"init": partition_entry.get("config", {}).get("init"), "chosen_by": "given"}
            ),
        }
    return result
