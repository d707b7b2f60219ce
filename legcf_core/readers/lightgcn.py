"""LightGCN's text format: ``user item item ...``, one user a line, whitespace-separated."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from legcf_core.errors import DataError
from legcf_core.readers import Columns, Table


def read_lightgcn(path: Path, columns: Columns) -> Table:
    """Split every line into tokens with pyarrow; the first is the user, the rest its items."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if any(v is not None for v in (columns.user, columns.item, columns.rating, columns.time)):
        raise DataError(f"{path} is LightGCN text (user item item ...), which has no columns to choose")
    lines = pa.array(_lines(path), pa.large_string())
    split = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(lines))
    tokens = split.flatten()
    offsets = split.offsets.to_numpy().astype(np.int64)
    counts = np.diff(offsets)
    filled = counts > 0
    starts = offsets[:-1][filled]
    per_user = counts[filled] - 1
    users = tokens.take(pa.array(np.repeat(starts, per_user)))
    rest = np.ones(len(tokens), dtype=bool)
    rest[starts] = False
    items = tokens.filter(pa.array(rest))
    return Table(path, users.cast(pa.string()), items.cast(pa.string()))


def _lines(path: Path) -> list[str]:
    """All lines of a UTF-8 text file (a leading byte order mark dropped)."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.readlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
