"""CSV and TSV files: delimiter and quoting detected on a sample as ``csv.Sniffer`` does,
a header detected or implied by column names, columns chosen by name or index."""

from __future__ import annotations

import csv
from pathlib import Path

from legcf_core.errors import DataError
from legcf_core.readers import Columns, Table
from legcf_core.readers.layout import NUMBER, Layout, read_layout

SAMPLE_BYTES = 1 << 16
SAMPLE_ROWS = 50
CANDIDATES = ",;\t|"
NAMES = {
    "user": ("user", "user_id", "userid", "uid", "user id", "customer_id", "visitorid", "reviewerid"),
    "item": (
        "item", "item_id", "itemid", "iid", "item id", "movie_id", "movieid", "product_id", "productid",
        "asin", "business_id", "track_id", "book_id", "isbn",
    ),
    "rating": ("rating", "ratings", "score", "stars", "rate"),
    "time": ("timestamp", "time", "ts", "unix_time", "datetime"),
}  # fmt: skip


def read_delimited(path: Path, columns: Columns) -> Table:
    """Read a CSV or TSV file of interactions, one per row."""
    sample = _sample(path)
    lines = [line for line in sample.splitlines() if line.strip()][:SAMPLE_ROWS]
    if not lines:
        import pyarrow as pa

        return Table(path, pa.array([], pa.string()), pa.array([], pa.string()))
    delimiter, quotechar = dialect(path, sample, lines[0])
    parsed = list(csv.reader(lines, delimiter=delimiter, quotechar=quotechar or '"'))
    header = has_header(parsed, columns)
    layout = choose(path, parsed[0], header, columns, delimiter, quotechar)
    return read_layout(path, layout, columns)


def _sample(path: Path) -> str:
    """The first 64 KiB as text, cut at a line end (a byte order mark dropped)."""
    with open(path, "rb") as handle:
        blob = handle.read(SAMPLE_BYTES)
    if len(blob) == SAMPLE_BYTES and b"\n" in blob:
        blob = blob[: blob.rindex(b"\n") + 1]
    return blob.decode("utf-8-sig", errors="replace")


def dialect(path: Path, sample: str, first: str) -> tuple[str, str | None]:
    """The delimiter (tab for ``.tsv``) and quote character, sniffed on the sample."""
    if path.suffix.lower() == ".tsv":
        return "\t", '"'
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=CANDIDATES)
        delimiter, quote = sniffed.delimiter, sniffed.quotechar or '"'
    except csv.Error:
        delimiter, quote = ",", '"'
    if delimiter not in first:  # the sniffer guessed from later lines; trust the first
        present = [c for c in CANDIDATES if c in first]
        delimiter = max(present, key=first.count) if present else ","
    return delimiter, quote


def has_header(rows: list[list[str]], columns: Columns) -> bool:
    """A first row is a header when columns are named, when it holds a known column name, or when
    one of its fields is not a number where every other sampled row has one."""
    if columns.named():
        return True
    first = [field.strip().lower() for field in rows[0]]
    if any(name in first for names in NAMES.values() for name in names):
        return True
    rest = rows[1:]
    if not rest:
        return False
    for index, field in enumerate(rows[0]):
        numeric = [NUMBER.fullmatch(row[index].strip()) for row in rest if index < len(row)]
        if numeric and all(numeric) and not NUMBER.fullmatch(field.strip()):
            return True
    return False


def choose(
    path: Path, first: list[str], header: bool, columns: Columns, delimiter: str, quotechar: str | None
) -> Layout:
    """The layout: which column is the user, the item, the rating and the time."""
    names = tuple(field.strip() for field in first) if header else ()
    width = len(first)
    picked = {role: pick(path, role, getattr(columns, role), names, width) for role in NAMES}
    free = [i for i in range(width) if i not in picked.values()]
    for role in ("user", "item"):
        if picked[role] is None and free:
            picked[role] = free.pop(0)
    if picked["time"] is None and columns.times and not header and 2 in free:
        picked["time"] = 2  # user,item,time: a third column without a header is the time
    if picked["user"] is None or picked["item"] is None:
        raise DataError(
            f"{path}: expected at least 2 columns (user and item), got {width}; "
            f"the first row is {delimiter.join(first)!r}"
        )
    chosen = [v for v in picked.values() if v is not None]
    if len(set(chosen)) != len(chosen):
        raise DataError(f"{path}: the user, item, rating and time columns must differ, got {picked}")
    return Layout(delimiter, quotechar, header, width, names=names, **picked)


def pick(path: Path, role: str, wanted: str | int | None, names: tuple[str, ...], width: int) -> int | None:
    """One role's column index: the one asked for, else a known header name, else None (the
    user and item then take the first free columns)."""
    option = f"--{role}-col"
    if isinstance(wanted, int):
        if wanted >= width:
            raise DataError(f"{path} has {width} columns (0..{width - 1}); {option} {wanted} is not one")
        return wanted
    if isinstance(wanted, str):
        lowered = [n.lower() for n in names]
        if wanted.lower() not in lowered:
            raise DataError(f"{path} has no column {wanted!r} ({option}); its header is {', '.join(names)}")
        return lowered.index(wanted.lower())
    for index, name in enumerate(names):
        if name.lower() in NAMES[role]:
            return index
    return None
