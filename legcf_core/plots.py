"""PNG plots of comparison rows: accuracy against parameters, and Figure 4's sweeps.

matplotlib runs with the non-interactive Agg backend, so plots work on a
machine without a display. Files are written atomically like every artifact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from legcf_core.artifacts import write_bytes_atomic  # noqa: E402

MARKERS = {"legcf": "o", "full": "s", "qr": "^", "pep": "D"}
LABELS = {"ndcg@20": "NDCG@20", "recall@20": "Recall@20", "ndcg@10": "NDCG@10", "recall@10": "Recall@10"}


def _save(figure: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def _count(value: float, _position: int) -> str:
    """A parameter count as people say it: 200k, 9M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def pareto_plot(rows: list[dict[str, Any]], path: Path, metric: str = "ndcg@20", title: str = "") -> None:
    """Accuracy against stored parameters (log scale): the view a user picks a method from."""
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for row in rows:
        axes.scatter(row["params"], row[metric], marker=MARKERS.get(row["embedding"], "x"), s=40)
        axes.annotate(
            row["name"], (row["params"], row[metric]), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    axes.set_xscale("log")
    axes.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # 1-2-5 ticks, labelled like 200k
    axes.xaxis.set_major_formatter(FuncFormatter(_count))
    axes.xaxis.set_minor_formatter(FuncFormatter(_count))
    axes.set_xlabel("embedding parameters (log scale)")
    axes.set_ylabel(f"test {LABELS.get(metric, metric)}")
    axes.set_title(title or f"{LABELS.get(metric, metric)} against size")
    axes.grid(True, which="both", alpha=0.3)
    _save(figure, path)


def sweep_plot(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Recall@20 and NDCG@20 against one swept symbol (Figure 4)."""
    rows = sorted(rows, key=lambda row: row["value"])
    symbol = rows[0]["sweep"] if rows else ""
    values = [row["value"] for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for ax, metric in zip(axes, ("recall@20", "ndcg@20"), strict=True):
        ax.errorbar(
            values,
            [row[metric] for row in rows],
            yerr=[row[f"{metric}_std"] for row in rows],
            marker="o",
            capsize=3,
        )
        ax.set_xlabel(symbol)
        ax.set_ylabel(f"test {LABELS[metric]}")
        if symbol == "c":
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
    figure.suptitle(title or f"sweep over {symbol}")
    _save(figure, path)
