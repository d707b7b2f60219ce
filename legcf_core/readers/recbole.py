"""RecBole atomic ``.inter`` files: tab-separated, with a typed header such as
``user_id:token	item_id:token	rating:float	timestamp:float``."""

from __future__ import annotations

from pathlib import Path

from legcf_core.errors import DataError
from legcf_core.readers import Columns, Table
from legcf_core.readers.layout import Layout, read_layout

DEFAULTS = {"user": "user_id", "item": "item_id", "rating": "rating", "time": "timestamp"}
TYPES = ("token", "token_seq", "float", "float_seq")


def read_inter(path: Path, columns: Columns) -> Table:
    """Columns are chosen by their header name (without the ``:type``) or index."""
    fields = _header(path)
    if fields is None:
        import pyarrow as pa

        return Table(path, pa.array([], pa.string()), pa.array([], pa.string()))
    names = tuple(field.split(":", 1)[0] for field in fields)
    for field in fields:
        kind = field.split(":", 1)[1] if ":" in field else ""
        if kind not in TYPES:
            raise DataError(
                f"{path}:1: header field {field!r} is not 'name:type' with a type of {', '.join(TYPES)}"
            )
    chosen: dict[str, int | None] = {}
    for role, default in DEFAULTS.items():
        wanted = getattr(columns, role)
        if isinstance(wanted, int):
            if wanted >= len(names):
                raise DataError(f"{path} has {len(names)} columns; --{role}-col {wanted} is not one")
            chosen[role] = wanted
        elif (wanted or default) in names:
            chosen[role] = names.index(wanted or default)
        elif wanted is not None or role in ("user", "item"):
            raise DataError(
                f"{path} has no column {wanted or default!r} (--{role}-col); it has {', '.join(names)}"
            )
        else:
            chosen[role] = None
    for role in ("user", "item"):
        if fields[chosen[role]].endswith("_seq"):
            raise DataError(f"{path}: the {role} column {fields[chosen[role]]!r} holds sequences, not one id")
    layout = Layout("\t", None, True, len(names), names=names, **chosen)  # type: ignore[arg-type]
    return read_layout(path, layout, columns)


def _header(path: Path) -> list[str] | None:
    """The first non-blank line's tab-separated fields, or None for an empty file."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for line in handle:
                if line.strip():
                    return line.rstrip("\r\n").split("\t")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    return None
