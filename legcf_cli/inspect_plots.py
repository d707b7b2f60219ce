"""``legcf inspect RUN --plot DIR``: pictures of a run's training and of what its model holds.

- ``curves.png``: BPR loss and validation NDCG@20 per epoch, pretrain then
  refine, assignment updates marked (from the manifest's history);
- ``usage.png``: entities per meta-embedding (anchors) before refine (S0, the
  partition's parts) and after it, as histograms (the paper's Figure 3);
- ``weights.png``: the distribution of the nonzero weights in S;
- ``projection.png``: a seeded sample of propagated entity rows projected on
  their first two principal components, the entities of the most used
  anchors coloured by anchor and those meta-embeddings' propagated rows marked
  (the paper's Figure 2).

The last three need an assignment S; for other layers only the curves are
written. The data come from the engine; the drawing is the CLI's (matplotlib,
Agg backend, imported here only when plots are asked for).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ASSIGNMENT_PLOTS = ("usage", "weights", "projection")
SAMPLE = 2000  # entities in the projection
HIGHLIGHT = 8  # anchors whose entities the projection colours
SEED = 0
METRIC = "ndcg@20"


@dataclass
class RunPictures:
    """What the plots draw, read from a run directory through the engine."""

    histories: dict[str, list[dict[str, Any]]]  # stage -> manifest history rows
    embedding: str
    codebook_size: int = 0
    anchors_before: np.ndarray | None = None  # each entity's part in S0
    anchors_after: np.ndarray | None = None  # each entity's anchor in the chosen model's S, if refined
    weights: np.ndarray | None = None  # nonzero weights of the chosen model's S
    rows: np.ndarray | None = None  # propagated rows of every entity, then every meta-embedding


@dataclass
class Written:
    paths: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reason: str = ""


def read_pictures(run_path: Path, which: str) -> RunPictures:
    """The manifest histories, and for a layer with an assignment its S before and after refine
    and the propagated rows of entities and meta-embeddings."""
    import torch

    from legcf_core.artifacts import RunDir
    from legcf_core.errors import ArtifactError
    from legcf_core.inspection import anchors
    from legcf_core.model import node_outputs
    from legcf_core.stages.inputs import load_data, load_model, load_partition_parts

    if not Path(run_path).is_dir():
        raise ArtifactError(f"{run_path} is not a run directory; plots need a run's training history")
    run = RunDir(Path(run_path))
    stages = run.load_manifest().get("stages", {})
    histories = {name: stages[name].get("history", []) for name in ("pretrain", "refine") if name in stages}
    data = load_data(run)
    chosen = load_model(run, which, data.n_entities)
    layer = chosen.model.layer
    pictures = RunPictures(histories, chosen.model.embedding)
    if layer.assignment is None:
        return pictures
    assignment = layer.assignment
    pictures.codebook_size = assignment.shape[1]
    pictures.anchors_before = np.asarray(load_partition_parts(run, data.n_entities))
    if chosen.trained_by == "refine":
        pictures.anchors_after = anchors(assignment)
    pictures.weights = np.asarray(assignment.data, dtype=np.float64)
    rows = node_outputs(chosen.model, data.train, data.n_users, torch.device("cpu"))
    pictures.rows = rows.cpu().numpy()
    return pictures


def save(figure: Any, path: Path) -> Path:
    """The figure as a PNG, written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    from legcf_core.artifacts import write_bytes_atomic

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def plot_curves(histories: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Loss and validation NDCG@20 per epoch, the stages one after another, updates marked."""
    import matplotlib.pyplot as plt

    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    offset = 0
    for stage, rows in histories.items():
        epochs = np.asarray([offset + row["epoch"] for row in rows])
        loss_axis.plot(epochs, [row["loss"] for row in rows], marker=".", label=stage)
        scored = [
            (e, row[METRIC]) for e, row in zip(epochs, rows, strict=True) if row.get(METRIC) is not None
        ]
        if scored:
            metric_axis.plot(*zip(*scored, strict=True), marker=".", label=stage)
        updates = [(e, row) for e, row in zip(epochs, rows, strict=True) if row.get("updated")]
        for axis, key in ((loss_axis, "loss"), (metric_axis, METRIC)):
            marked = [(e, row[key]) for e, row in updates if row.get(key) is not None]
            if marked:
                axis.plot(*zip(*marked, strict=True), "kv", markersize=5, linestyle="none")
        if offset:
            for axis in (loss_axis, metric_axis):
                axis.axvline(offset + 0.5, color="grey", linestyle=":", linewidth=1)
        offset = int(epochs.max(initial=offset))
    loss_axis.set(title="BPR loss", xlabel="epoch")
    metric_axis.set(title="validation NDCG@20", xlabel="epoch")
    if any(row.get("updated") for rows in histories.values() for row in rows):
        metric_axis.plot([], [], "kv", linestyle="none", label="S updated")
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save(figure, path)


def plot_usage(before: np.ndarray, after: np.ndarray | None, codebook_size: int, path: Path) -> Path:
    """Histograms of entities per meta-embedding (by anchor), before and after refine."""
    import matplotlib.pyplot as plt

    counts = {"before refine (S0)": np.bincount(before[before >= 0], minlength=codebook_size)}
    if after is not None:
        counts["after refine"] = np.bincount(after[after >= 0], minlength=codebook_size)
    top = max(int(c.max(initial=0)) for c in counts.values())
    bins = np.arange(0, top + 2) if top < 60 else np.linspace(0, top + 1, 60)
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for label, values in counts.items():
        axis.hist(
            values, bins=bins, histtype="step", linewidth=1.5, label=f"{label}: {(values > 0).sum()} used"
        )
    axis.set(
        title=f"entities per meta-embedding (c = {codebook_size})",
        xlabel="entities anchored to a meta-embedding",
        ylabel="meta-embeddings",
        yscale="log",
    )
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return save(figure, path)


def plot_weights(weights: np.ndarray, path: Path) -> Path:
    """The distribution of the nonzero entries of S."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.hist(weights, bins=60, color="tab:blue")
    axis.set(
        title=f"weights in S ({weights.size:,} nonzeros, median {np.median(weights):.3f})",
        xlabel="weight",
        ylabel="entries",
        yscale="log",
    )
    axis.grid(alpha=0.3)
    return save(figure, path)


def principal_plane(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``rows`` and their first two principal directions (d x 2), by SVD."""
    mean = rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    return mean, vt[:2].T


def plot_projection(rows: np.ndarray, anchors: np.ndarray, n_entities: int, path: Path) -> Path:
    """A seeded sample of entity rows in their principal plane; the entities of the most used
    anchors coloured by anchor, with those meta-embeddings' rows marked (X), the rest grey."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(SEED)
    sample = np.sort(rng.choice(n_entities, size=min(SAMPLE, n_entities), replace=False))
    sample = sample[anchors[sample] >= 0]
    mean, plane = principal_plane(rows[sample])
    points = (rows[sample] - mean) @ plane
    ids, counts = np.unique(anchors[sample], return_counts=True)
    shown = ids[np.argsort(-counts, kind="stable")[:HIGHLIGHT]]
    figure, axis = plt.subplots(figsize=(6, 5))
    rest = ~np.isin(anchors[sample], shown)
    axis.scatter(points[rest, 0], points[rest, 1], color="lightgrey", s=5, label="other entities")
    colours = plt.get_cmap("tab10")
    for n, meta in enumerate(shown):
        mine = anchors[sample] == meta
        axis.scatter(points[mine, 0], points[mine, 1], color=colours(n % 10), s=14)
        centre = (rows[n_entities + meta] - mean) @ plane
        axis.scatter(*centre, color=colours(n % 10), marker="X", s=120, edgecolors="black", linewidths=1)
    axis.scatter([], [], color="grey", marker="X", s=80, edgecolors="black", label="meta-embedding")
    axis.set(
        title=f"{sample.size} entities; the {shown.size} most used anchors in colour",
        xlabel="PC 1",
        ylabel="PC 2",
    )
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return save(figure, path)


def write_plots(run_path: Path, out_dir: Path, which: str = "auto") -> Written:
    """Every plot the run allows into ``out_dir``; what was written and what was skipped, and why."""
    import matplotlib

    matplotlib.use("Agg")
    pictures = read_pictures(run_path, which)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = Written([plot_curves(pictures.histories, out_dir / "curves.png")])
    if pictures.rows is None:
        written.skipped = list(ASSIGNMENT_PLOTS)
        written.reason = f"the {pictures.embedding} layer has no assignment S"
        return written
    n_entities = pictures.anchors_before.size
    anchor = pictures.anchors_before if pictures.anchors_after is None else pictures.anchors_after
    written.paths += [
        plot_usage(
            pictures.anchors_before, pictures.anchors_after, pictures.codebook_size, out_dir / "usage.png"
        ),
        plot_weights(pictures.weights, out_dir / "weights.png"),
        plot_projection(pictures.rows, anchor, n_entities, out_dir / "projection.png"),
    ]
    return written
