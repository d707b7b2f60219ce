"""Delimited files (CSV, TSV, ratings.dat, .inter): pyarrow's multithreaded parser for
speed, and a strict line-by-line scan with Python's ``csv`` module that finds and names
the first bad line whenever pyarrow refuses a file or a column fails a check.

The scan is the reference for what is accepted; the fast path only ever accepts a
subset of it, so a file either reads fast or gets one error naming its line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from legcf_core.errors import DataError
from legcf_core.readers import Columns, Table
from legcf_core.readers.ids import id_problem, trimmed

NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
BLOCK = 1 << 24  # pyarrow's parse block (16 MiB): large enough for 2 cores, small enough for memory


@dataclass(frozen=True)
class Layout:
    """How a delimited file is laid out; both the fast reader and the strict scan follow it."""

    delimiter: str  # one character
    quotechar: str | None  # None: quotes are plain characters
    header: bool
    width: int  # fields in every row
    user: int
    item: int
    rating: int | None = None
    time: int | None = None
    empty: tuple[int, ...] = ()  # columns that must be empty (the gaps of ratings.dat's '::')
    split: Callable[[str], list[str]] | None = None  # a line splitter in place of csv's
    names: tuple[str, ...] = field(default=())  # the header's names, for messages

    def label(self, index: int) -> str:
        return repr(self.names[index]) if index < len(self.names) else f"column {index}"


def read_layout(path: Path, layout: Layout, columns: Columns, reference: Layout | None = None) -> Table:
    """Read the columns ``layout`` chooses with pyarrow (the rating and time only where
    ``columns`` wants them); any refusal becomes the strict scan's error, made by
    ``reference`` (the same file as a person reads it) where given."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    unused = {"rating": None} if not columns.ratings else {}
    unused.update({"time": None} if not columns.times else {})
    layout = replace(layout, **unused)
    strict = replace(reference or layout, **unused)

    names = [f"c{i}" for i in range(layout.width)]
    numbers = [i for i in (layout.rating, layout.time) if i is not None]
    types = {names[i]: pa.string() for i in (layout.user, layout.item, *layout.empty)}
    types.update({names[i]: pa.float64() for i in numbers})
    options = {
        "read_options": pacsv.ReadOptions(column_names=names, skip_rows=int(layout.header), block_size=BLOCK),
        "parse_options": pacsv.ParseOptions(
            delimiter=layout.delimiter,
            quote_char=layout.quotechar or False,
            newlines_in_values=False,
            ignore_empty_lines=True,
        ),
        "convert_options": pacsv.ConvertOptions(
            column_types=types,
            include_columns=list(types),
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }
    try:
        table = pacsv.read_csv(path, **options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        if scan(path, strict) == 0:  # a header alone, without a line end: no rows, not an error
            return Table(path, pa.array([], pa.string()), pa.array([], pa.string()))
        raise DataError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    users = trimmed(table.column(names[layout.user]).combine_chunks())
    items = trimmed(table.column(names[layout.item]).combine_chunks())
    rating, time = (
        None if i is None else table.column(names[i]).to_numpy() for i in (layout.rating, layout.time)
    )
    gaps = [table.column(names[i]).combine_chunks() for i in layout.empty]
    if (
        id_problem(users)
        or id_problem(items)
        or any(_bad(x) for x in (rating, time))
        or any(map(_filled, gaps))
    ):
        scan(path, strict)
        raise DataError(f"cannot read {path}: a row failed a check the line scan did not repeat")
    return Table(path, users, items, rating, time)


def _bad(values: np.ndarray | None) -> bool:
    return values is not None and not bool(np.isfinite(values).all())


def _filled(column: object) -> bool:
    import pyarrow.compute as pc

    return bool(pc.any(pc.not_equal(pc.binary_length(column), 0)).as_py() or False)


def rows(path: Path, layout: Layout) -> Iterator[tuple[int, list[str], str]]:
    """Each non-blank row with its line number and text, as the strict scan sees it."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if layout.split is not None:
                for lineno, line in enumerate(handle, start=1):
                    text = line.rstrip("\r\n")
                    if text:
                        yield lineno, layout.split(text), text
                return
            quoting = csv.QUOTE_NONE if layout.quotechar is None else csv.QUOTE_MINIMAL
            quote = layout.quotechar or '"'
            reader = csv.reader(
                handle, delimiter=layout.delimiter, quotechar=quote, quoting=quoting, strict=True
            )
            for fields in reader:
                if fields:
                    yield reader.line_num, fields, layout.delimiter.join(fields)
    except UnicodeDecodeError:
        blob = path.read_bytes()
        try:
            blob.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            start = exc.start + (3 if blob.startswith(b"\xef\xbb\xbf") else 0)
            line = blob[:start].count(b"\n") + 1
            raise DataError(f"{path}:{line} is not UTF-8 text (byte {start})") from None
        raise
    except csv.Error as exc:
        raise DataError(f"{path}: cannot parse ({exc})") from None


def scan(path: Path, layout: Layout) -> int:
    """Raise the first bad line's error; if every line passes, the number of data rows."""
    count, first = 0, True
    for lineno, fields, text in rows(path, layout):
        if first and layout.header:
            first = False
            continue
        first = False
        check_row(fields, layout, f"{path}:{lineno}", text)
        count += 1
    return count


def check_row(fields: list[str], layout: Layout, where: str, text: str) -> None:
    """One row's checks, the same the fast path makes on whole columns."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    if len(fields) != layout.width:
        what = "user and item" if len(fields) < 2 else f"{layout.width}"
        raise DataError(f"{where}: expected {what} fields, got {len(fields)} in {shown!r}")
    for index, role in ((layout.user, "user"), (layout.item, "item")):
        if not fields[index].strip():
            raise DataError(f"{where}: the {role} id ({layout.label(index)}) is empty in {shown!r}")
    for index, role in ((layout.rating, "rating"), (layout.time, "time")):
        if index is not None and not NUMBER.fullmatch(fields[index].strip()):
            raise DataError(f"{where}: the {role} ({layout.label(index)}) {fields[index]!r} is not a number")
    for index in layout.empty:
        if fields[index]:
            raise DataError(f"{where}: expected fields separated by '::', got {shown!r}")
