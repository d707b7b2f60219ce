"""A dataset's files read into coded columns: ratings filtered, ids coded over all files
together (so train and test share one vocabulary), and what was read and dropped counted."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from legcf_core.errors import DataError
from legcf_core.readers import Columns, Table, read_table
from legcf_core.readers.ids import code_columns


@dataclass(frozen=True)
class CodedFile:
    """One file's interactions with ids as codes (the integer ids themselves, or token indices)."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    times: np.ndarray | None = None


@dataclass(frozen=True)
class CodedDataset:
    """The files of a dataset, coded over one vocabulary per side."""

    files: list[CodedFile]
    user_tokens: np.ndarray | None  # str per user code, or None when codes are integer ids
    item_tokens: np.ndarray | None
    counts: dict[str, int] = field(default_factory=dict)  # rows_read, below_min_rating
    notes: tuple[str, ...] = ()


def read_coded(
    paths: list[Path], columns: Columns | None = None, min_rating: float | None = None, times: bool = False
) -> CodedDataset:
    """Read ``paths``, keep rows rated at least ``min_rating``, and code their ids (the two sides
    in two threads: pyarrow and numpy release the GIL). Ratings are parsed only for
    ``min_rating``, times only when asked for."""
    wanted = replace(columns or Columns(), ratings=min_rating is not None, times=times)
    tables = [read_table(path, wanted) for path in paths]
    rows_read = sum(t.rows for t in tables)
    below = 0
    if min_rating is not None:
        missing = [str(t.path) for t in tables if t.ratings is None]
        if missing:
            raise DataError(
                f"min_rating needs a rating column, and {', '.join(missing)} has none; "
                "name it with --rating-col, or leave out --min-rating"
            )
        kept = [_rated(t, min_rating) for t in tables]
        below = rows_read - sum(t.rows for t in kept)
        tables = kept
    with ThreadPoolExecutor(2) as pool:
        users, items = pool.map(
            code_columns, ([t.users for t in tables], [t.items for t in tables]), ("user", "item")
        )
    files = [CodedFile(u, i, t.times) for u, i, t in zip(users.codes, items.codes, tables, strict=True)]
    notes = tuple(n for n in (users.note, items.note) if n)
    counts = {"rows_read": rows_read, "below_min_rating": below}
    return CodedDataset(files, users.tokens, items.tokens, counts, notes)


def _rated(table: Table, min_rating: float) -> Table:
    """The rows of ``table`` rated at least ``min_rating``."""
    import pyarrow as pa

    assert table.ratings is not None
    keep = table.ratings >= min_rating
    mask = pa.array(keep)
    times = None if table.times is None else table.times[keep]
    return Table(table.path, table.users.filter(mask), table.items.filter(mask), table.ratings[keep], times)
