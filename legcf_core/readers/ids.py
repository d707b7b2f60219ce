"""Id columns to codes: integers stay the ids they are, anything else becomes a token.

When every id of a column (over all of a dataset's files) is a plain non-negative
integer in ASCII digits, the codes *are* those integers, exactly as legcf stored ids
before tokens existed. Otherwise each distinct string is a token, and the codes index
the tokens sorted by their UTF-8 bytes, so the order never depends on the file's.

Hashing 10 million strings is the slow part; ids of up to 8 bytes (``u123``,
``B00004``) are packed into one big-endian uint64 each, which hashes as fast as an
integer and sorts in the strings' order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DIGITS_MAX = 19  # int64 holds every 18-digit number; 19 digits are checked on conversion
SPACE = np.zeros(256, dtype=bool)
SPACE[[9, 10, 11, 12, 13, 32]] = True  # ASCII whitespace, by byte
NOT_DIGIT = np.ones(256, dtype=bool)
NOT_DIGIT[48:58] = False


@dataclass(frozen=True)
class Coded:
    """Codes of several id columns over one shared vocabulary."""

    codes: list[np.ndarray]  # int64, one array per column
    tokens: np.ndarray | None  # str per code, sorted; None when the codes are the integer ids
    note: str | None = None  # why a column that looks numeric was read as text


def strings(array: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pyarrow string array's bytes, each value's start in them and its length, without copies."""
    import pyarrow as pa

    if pa.types.is_string(array.type):
        width = np.int32
    elif pa.types.is_large_string(array.type):
        width = np.int64
    else:
        raise TypeError(f"expected strings, got {array.type}")
    _, offsets, data = array.buffers()
    offsets = np.frombuffer(offsets, dtype=width)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return data, offsets[:-1], np.diff(offsets)


def used_bytes(array: Any) -> np.ndarray:
    """The bytes of all of ``array``'s strings, back to back (a view, no copy)."""
    import pyarrow as pa

    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets, data = array.buffers()
    if len(array) == 0 or data is None:
        return np.zeros(0, np.uint8)
    first, last = np.frombuffer(offsets, dtype=width)[[array.offset, array.offset + len(array)]]
    return np.frombuffer(data, dtype=np.uint8)[first:last]


def _any_in(table: np.ndarray, values: np.ndarray) -> bool:
    """Whether any byte of ``values`` is marked in the 256-entry ``table``; min and max (fast
    SIMD passes) settle the usual case without a lookup."""
    if values.size == 0:
        return False
    low, high = int(values.min()), int(values.max())
    if table[low] or table[high]:  # both occur in values
        return True
    if not table[low : high + 1].any():
        return False
    return bool(table[values].any())


def combined(column: Any) -> Any:
    """One contiguous array from a chunked one (large strings once 2 GiB of text needs them)."""
    import pyarrow as pa

    if isinstance(column, pa.Array):
        return column
    try:
        return column.combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowCapacityError):
        return column.cast(pa.large_string()).combine_chunks()


def trimmed(array: Any) -> Any:
    """The ids without surrounding whitespace (``1, 2`` reads as ``1`` and ``2``); checked cheaply first."""
    import pyarrow.compute as pc

    array = combined(array)
    if _any_in(SPACE, used_bytes(array)):  # trimming copies, so only when needed
        return pc.utf8_trim_whitespace(array)
    return array


def id_problem(array: Any) -> bool:
    """Whether a string id column has an empty id (the strict scan then names its line)."""
    return array.null_count > 0 or bool((strings(array)[2] == 0).any())


def code_columns(columns: list[Any], role: str) -> Coded:
    """Codes for ``columns`` (pyarrow arrays of strings or integers) over one vocabulary."""
    import pyarrow as pa

    if all(pa.types.is_integer(c.type) for c in columns):
        values = [c.to_numpy(zero_copy_only=False).astype(np.int64) for c in columns]
        if all(v.size == 0 or v.min() >= 0 for v in values):
            return Coded(values, None)
    columns = [c.cast(pa.string()) if pa.types.is_integer(c.type) else c for c in columns]
    if len(columns) == 1:
        whole = combined(columns[0])
    else:
        whole = combined(pa.chunked_array(columns, type=columns[0].type if columns else pa.string()))
    integers = _as_integers(whole)
    if integers is not None:
        return Coded(_split(integers, columns), None)
    codes, tokens = _tokenize(whole)
    first = _first_non_integer(whole)
    note = None
    if first is not None and first > 0:  # it starts with integers, then something else
        token = whole[first].as_py()
        note = f"{role} ids are read as text tokens: {token!r} is not a plain non-negative integer"
    return Coded(_split(codes, columns), tokens, note)


def _split(values: np.ndarray, columns: list[Any]) -> list[np.ndarray]:
    bounds = np.cumsum([len(c) for c in columns])[:-1]
    return list(np.split(values, bounds))


def _as_integers(array: Any) -> np.ndarray | None:
    """The ids as int64 if every one is 1 to 19 ASCII digits within int64, else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = strings(array)[2]
    if lengths.size == 0:
        return np.zeros(0, np.int64)
    if lengths.min() < 1 or lengths.max() > DIGITS_MAX:
        return None
    if _any_in(NOT_DIGIT, used_bytes(array)):
        return None
    try:
        return pc.cast(array, pa.int64()).to_numpy()
    except pa.ArrowInvalid:  # a 19-digit number beyond int64
        return None


def _first_non_integer(array: Any) -> int | None:
    """The row of the first id holding a byte that is not an ASCII digit (ids are never empty here)."""
    data, starts, lengths = strings(array)
    if lengths.size == 0 or NOT_DIGIT[data[starts[0] : starts[0] + lengths[0]]].any():
        return 0 if lengths.size else None  # the very first id is text: nothing turned
    used = used_bytes(array)
    if not _any_in(NOT_DIGIT, used):
        return None
    return int(np.searchsorted(starts - starts[0], int(NOT_DIGIT[used].argmax()), side="right")) - 1


def _tokenize(array: Any) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the sorted distinct strings of ``array``, and those strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data, starts, lengths = strings(array)
    if lengths.size and lengths.max() <= 8 and used_bytes(array).min(initial=1) > 0:  # no NUL byte
        encoded = pc.dictionary_encode(pa.array(_packed(array, data, starts, lengths)))
        distinct = encoded.dictionary.to_numpy().byteswap()  # big-endian: keys sort as the ids do
        order = np.argsort(distinct, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        codes = rank[encoded.indices.to_numpy()]
        raw = distinct[order].byteswap().view("S8")  # bytes in id order; trailing NULs (padding) dropped
        return codes, np.char.decode(raw, "utf-8").astype(object)
    encoded = pc.dictionary_encode(array)
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codes = rank[encoded.indices.to_numpy()]
    tokens = encoded.dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64, copy=False), np.asarray(tokens, dtype=object)


MASKS = np.array([2 ** (8 * n) - 1 for n in range(9)], dtype=np.uint64)  # the low n bytes


def _packed(array: Any, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each id of at most 8 bytes as one uint64 (its bytes in memory order, zero-padded): equal
    ids give equal keys, and byte-swapped a key sorts as its id does. ASCII ids are padded
    by pyarrow into 8 bytes each, read as uint64 without a copy; others take one gather of
    8 unaligned bytes an id and a mask that keeps the id's own bytes."""
    if used_bytes(array).max(initial=0) < 128:
        import pyarrow as pa
        import pyarrow.compute as pc

        padded_ids = pc.ascii_rpad(array, 8, padding="\x00")
        _, offsets, blob = padded_ids.buffers()
        width = np.int64 if pa.types.is_large_string(padded_ids.type) else np.int32
        first = int(np.frombuffer(offsets, dtype=width)[padded_ids.offset])
        return np.frombuffer(blob, dtype=np.uint8)[first : first + 8 * len(array)].view(np.uint64)
    padded = np.concatenate([data, np.zeros(8, np.uint8)])
    windows = np.ndarray(shape=(data.size + 1,), dtype="<u8", buffer=padded, strides=(1,))
    keys = windows[starts]
    keys &= MASKS[lengths]
    return keys.view(np.uint64)
