"""Parquet files, read with pyarrow; columns chosen by name or index."""

from __future__ import annotations

from pathlib import Path

from legcf_core.errors import DataError
from legcf_core.readers import Columns, Table
from legcf_core.readers.delimited import NAMES

UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}  # timestamp ticks a second


def read_parquet(path: Path, columns: Columns) -> Table:
    """Ids may be stored as strings or integers; ratings as any number type, times as numbers,
    timestamps or dates (read as Unix seconds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    names = list(schema.names)
    chosen = {role: _column(path, role, getattr(columns, role), names) for role in NAMES}
    chosen["rating"] = chosen["rating"] if columns.ratings else None
    chosen["time"] = chosen["time"] if columns.times else None
    free = [name for name in names if name not in chosen.values()]
    for role in ("user", "item"):
        if chosen[role] is None:
            if not free:
                raise DataError(f"{path}: expected at least 2 columns (user and item), got {len(names)}")
            chosen[role] = free.pop(0)
    try:
        table = pq.read_table(path, columns=[c for c in chosen.values() if c is not None])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    ids = {}
    for role in ("user", "item"):
        column = table.column(chosen[role]).combine_chunks()
        if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)):
            raise DataError(
                f"{path}: the {role} column {chosen[role]!r} is {column.type}; ids are strings or integers"
            )
        if column.null_count:
            raise DataError(f"{path}: the {role} column {chosen[role]!r} has {column.null_count} empty ids")
        ids[role] = column
    numbers = {}
    for role in ("rating", "time"):
        numbers[role] = None
        if chosen[role] is not None:
            column = table.column(chosen[role])
            scale = 1.0
            if pa.types.is_timestamp(column.type):  # Unix seconds, whatever the stored unit
                column, scale = column.cast(pa.int64()), 1.0 / UNITS[column.type.unit]
            elif pa.types.is_date(column.type):
                column, scale = column.cast(pa.date32()).cast(pa.int32()), 86_400.0
            try:
                numbers[role] = column.cast(pa.float64()).to_numpy() * scale
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(
                    f"{path}: the {role} column {chosen[role]!r} is {column.type}, not numbers"
                ) from None
    return Table(path, ids["user"], ids["item"], numbers["rating"], numbers["time"])


def _column(path: Path, role: str, wanted: str | int | None, names: list[str]) -> str | None:
    if isinstance(wanted, int):
        if wanted >= len(names):
            raise DataError(f"{path} has {len(names)} columns; --{role}-col {wanted} is not one")
        return names[wanted]
    if isinstance(wanted, str):
        if wanted not in names:
            raise DataError(f"{path} has no column {wanted!r} (--{role}-col); it has {', '.join(names)}")
        return wanted
    return next((n for n in names if n.lower() in NAMES[role]), None)
