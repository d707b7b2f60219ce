"""The one way a stage records itself in the run's manifest."""

from __future__ import annotations

import time
from typing import Any

from legcf_core import artifacts as art


def rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Metrics rounded to 6 decimals, as the manifest and outputs show them."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}


def record_stage(
    run: art.RunDir,
    name: str,
    *,
    config: dict[str, Any],
    inputs: tuple[str, ...],
    outputs: dict[str, str],
    metrics: dict[str, Any],
    started: float,
    **fields: Any,
) -> None:
    """Store a finished stage: its config, the checksums of the files it read and
    wrote, its metrics, any stage-specific ``fields`` and the seconds it took."""
    entry = {
        "config": config,
        "inputs": run.inputs(*inputs),
        "outputs": outputs,
        "metrics": metrics,
        **fields,
        "seconds": round(time.perf_counter() - started, 3),
    }
    run.record(name, entry)
