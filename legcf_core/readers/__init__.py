"""Interaction file readers: one module a format, one small contract.

Every reader turns a file into a :class:`Table`: parallel columns of user and
item ids exactly as the file writes them (pyarrow string arrays, or integer
arrays where the file stores integers), optional rating and time columns, and
the row count. Mapping ids to indices, dropping and splitting are
:mod:`legcf_core.data`'s job; :mod:`legcf_core.readers.ids` turns id columns
into codes.

The format follows the file's suffix, so a file is never read as a format it
is not: ``.txt`` LightGCN text, ``.csv``/``.tsv`` delimited text, ``.dat``
MovieLens ``ratings.dat``, ``.inter`` RecBole atomic files, ``.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from legcf_core.errors import DataError

FORMATS = {
    ".txt": "LightGCN text (user item item ...)",
    ".csv": "CSV",
    ".tsv": "TSV",
    ".dat": "MovieLens ratings.dat (user::item::rating::time)",
    ".inter": "RecBole atomic file (typed header)",
    ".parquet": "Parquet",
}
SUFFIXES = tuple(FORMATS)


@dataclass(frozen=True)
class Columns:
    """Which columns hold what: a 0-based index, a header name, or None for the format's default
    (``--user-col``, ``--item-col``, ``--rating-col``, ``--time-col``)."""

    user: str | int | None = None
    item: str | int | None = None
    rating: str | int | None = None
    time: str | int | None = None
    ratings: bool = True  # read the rating column, where there is one (parsing costs: skip it unused)
    times: bool = True  # likewise the time column

    def named(self) -> bool:
        """Whether any column is chosen by name, which needs a header."""
        return any(isinstance(v, str) for v in (self.user, self.item, self.rating, self.time))


@dataclass(frozen=True)
class Table:
    """One file's interactions, one row each, ids not yet mapped."""

    path: Path
    users: Any  # pyarrow Array of strings as written, or of integers (Parquet)
    items: Any
    ratings: np.ndarray | None = None  # float64, where the file has a rating column
    times: np.ndarray | None = None  # float64, where the file has a time column

    @property
    def rows(self) -> int:
        return len(self.users)


def read_table(path: Path, columns: Columns | None = None) -> Table:
    """Read one interaction file, choosing the reader from its suffix."""
    columns = columns or Columns()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(f"{s} ({name})" for s, name in FORMATS.items())
        raise DataError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; legcf reads {known}")
    check_file(path)
    if suffix == ".txt":
        from legcf_core.readers.lightgcn import read_lightgcn

        return read_lightgcn(path, columns)
    if suffix in (".csv", ".tsv"):
        from legcf_core.readers.delimited import read_delimited

        return read_delimited(path, columns)
    if suffix == ".dat":
        from legcf_core.readers.movielens import read_ratings_dat

        return read_ratings_dat(path, columns)
    if suffix == ".inter":
        from legcf_core.readers.recbole import read_inter

        return read_inter(path, columns)
    from legcf_core.readers.parquet import read_parquet

    return read_parquet(path, columns)


def check_file(path: Path) -> None:
    """A readable regular file, or one DataError saying what it is instead."""
    if not path.exists():
        raise DataError(f"dataset file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a directory, expected a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
