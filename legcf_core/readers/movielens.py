"""MovieLens ``ratings.dat``: ``user::item::rating::time`` with no header (ml-1m, ml-10m)."""

from __future__ import annotations

from pathlib import Path

from legcf_core.errors import DataError
from legcf_core.readers import Columns, Table
from legcf_core.readers.layout import Layout, read_layout

FIELDS = 4


def read_ratings_dat(path: Path, columns: Columns) -> Table:
    """pyarrow splits on single ``:``, so each ``::`` leaves an empty column between two fields,
    which must stay empty; the strict scan splits on ``::`` as a person reads the file."""
    chosen = {}
    for role, default in (("user", 0), ("item", 1), ("rating", 2), ("time", 3)):
        wanted = getattr(columns, role)
        if isinstance(wanted, str) or (isinstance(wanted, int) and wanted >= FIELDS):
            raise DataError(
                f"{path} is a ratings.dat file with 4 unnamed fields; "
                f"--{role}-col must be 0..3, got {wanted!r}"
            )
        chosen[role] = default if wanted is None else wanted
    fast = Layout(":", None, False, 2 * FIELDS - 1, empty=(1, 3, 5), **{r: 2 * i for r, i in chosen.items()})
    names = ("user", "item", "rating", "time")
    strict = Layout(":", None, False, FIELDS, split=lambda line: line.split("::"), names=names, **chosen)
    return read_layout(path, fast, columns, strict)
