"""What ``legcf compare`` writes from the engine's rows: a Markdown table, the rows as
JSON and a PNG plot per set, and ``pareto.png`` over every set.

matplotlib runs with the non-interactive Agg backend, so plots work on a
machine without a display; it is imported only when a plot is drawn. Plot
markers and legend names come from the layer registry. Files are written
atomically through the engine's artifact functions.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from legcf_core.artifacts import write_bytes_atomic, write_json_atomic
from legcf_core.config import VALIDATION_METRIC
from legcf_core.experiments.sets import TITLES
from legcf_core.experiments.summary import METRICS
from legcf_core.registry import LAYERS

METRIC_LABELS = {
    "ndcg@20": "NDCG@20",
    "recall@20": "Recall@20",
    "ndcg@10": "NDCG@10",
    "recall@10": "Recall@10",
}
UNKNOWN_MARKER = "x"


def write_report(out: Path, tables: dict[str, list[dict[str, Any]]], command: str) -> list[Path]:
    """Each set's ``.md``, ``.json`` and ``.png``, then ``pareto.png`` over the kept
    model of every run in them; returns the Markdown files in set order."""
    every_row = []
    for set_name, rows in tables.items():
        write_set(out, set_name, rows, command)
        every_row += [row for row in rows if row["model"] == "auto"]
    unique = {row["run"]: row for row in every_row}
    pareto_plot(list(unique.values()), out / "pareto.png", title="test NDCG@20 against embedding parameters")
    return [out / f"{set_name}.md" for set_name in tables]


def write_set(out: Path, set_name: str, rows: list[dict[str, Any]], command: str) -> list[Path]:
    """``<set>.md``, ``<set>.json`` and ``<set>.png`` for one set's rows."""
    title = f"{set_name}: {TITLES.get(set_name, set_name)}"
    paths = [out / f"{set_name}.md", out / f"{set_name}.json", out / f"{set_name}.png"]
    write_bytes_atomic(paths[0], markdown_table(title, rows, command).encode())
    write_json_atomic(paths[1], {"set": set_name, "command": command, "rows": rows})
    if set_name.startswith("fig4-"):
        sweep_plot(rows, paths[2], title)
    else:
        pareto_plot(rows, paths[2], title=title)
    return paths


# ------------------------------------------------------------------ Markdown


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
            f"| {_valid(row)} | {' | '.join(cells)} "
            f"| {_duration(row['wall_s'])} | {len(row['seeds'])} | {_kept(row)} |"
        )
    return "\n".join(lines) + "\n"


def _valid(row: dict[str, Any]) -> str:
    """The validation score, or a dash for runs without a validation split."""
    value = row[f"valid_{VALIDATION_METRIC}"]
    return "—" if value is None else f"{value:.4f}"


def _kept(row: dict[str, Any]) -> str:
    if row["model"] == "pretrain":
        return "pretrain (asked)"
    return ", ".join(sorted(set(row["kept"])))


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


# --------------------------------------------------------------------- plots


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def _count(value: float, _position: int) -> str:
    """A parameter count as people say it: 200k, 9M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _marker(embedding: str) -> str:
    entry = LAYERS.get(embedding)
    return entry.marker if entry is not None else UNKNOWN_MARKER


def pareto_plot(rows: list[dict[str, Any]], path: Path, metric: str = "ndcg@20", title: str = "") -> None:
    """Accuracy against stored parameters (log scale): the view a user picks a method from."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    figure, axes = _pyplot().subplots(figsize=(6.4, 4.4))
    for row in rows:
        axes.scatter(row["params"], row[metric], marker=_marker(row["embedding"]), s=40)
        axes.annotate(
            row["name"], (row["params"], row[metric]), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    axes.set_xscale("log")
    axes.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # 1-2-5 ticks, labelled like 200k
    axes.xaxis.set_major_formatter(FuncFormatter(_count))
    axes.xaxis.set_minor_formatter(FuncFormatter(_count))
    axes.set_xlabel("embedding parameters (log scale)")
    label = METRIC_LABELS.get(metric, metric)
    axes.set_ylabel(f"test {label}")
    axes.set_title(title or f"{label} against size")
    axes.grid(True, which="both", alpha=0.3)
    _save(figure, path)


def sweep_plot(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Recall@20 and NDCG@20 against one swept symbol (Figure 4)."""
    rows = sorted(rows, key=lambda row: row["value"])
    symbol = rows[0]["sweep"] if rows else ""
    values = [row["value"] for row in rows]
    figure, axes = _pyplot().subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for ax, metric in zip(axes, ("recall@20", "ndcg@20"), strict=True):
        ax.errorbar(
            values,
            [row[metric] for row in rows],
            yerr=[row[f"{metric}_std"] for row in rows],
            marker="o",
            capsize=3,
        )
        ax.set_xlabel(symbol)
        ax.set_ylabel(f"test {METRIC_LABELS[metric]}")
        if symbol == "c":
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
    figure.suptitle(title or f"sweep over {symbol}")
    _save(figure, path)
