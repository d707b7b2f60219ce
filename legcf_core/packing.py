"""Non-negative integers stored in as few bits as they need, and read back checked.

Exported models are mostly indices: item columns of the training graph, the
meta-embedding columns of S, row lengths, degrees. Each array is stored in
the narrowest unsigned type that holds its largest value (uint8, uint16,
int32, int64) or, when that type would waste bits (c = 500 needs 9 bits, not
16), bit-packed: ``NAME.packed`` (uint8, little-endian bit order) and
``NAME.layout`` (int64: bits per value, then the array's shape). Readers get
int64 arrays either way, after checking shape, dtype and range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from legcf_core.errors import ArtifactError

CHUNK = 1 << 20  # values packed or unpacked at a time: bounds the bit matrix to CHUNK x bits bytes
STORED_TYPES = (np.uint8, np.uint16, np.int32, np.int64)


class PackingError(ArtifactError):
    """An integer array that breaks its stored layout; raised while parsing a file."""


def bits_needed(upper: int) -> int:
    """Bits that hold every value in 0..upper (at least 1)."""
    return max(1, int(upper).bit_length())


def index_dtype(upper: int) -> np.dtype:
    """The smallest stored integer type that holds 0..upper."""
    for dtype in STORED_TYPES:
        if upper <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"{upper} does not fit in int64")


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` (non-negative, below 2**bits) as a little-endian bit stream, ``bits`` each."""
    flat = np.ascontiguousarray(values, dtype=np.int64).ravel()
    shifts = np.arange(bits, dtype=np.int64)
    # CHUNK * bits is a whole number of bytes, so packing chunk by chunk gives the same stream
    chunks = [
        np.packbits(((flat[s : s + CHUNK, None] >> shifts) & 1).astype(np.uint8).ravel(), bitorder="little")
        for s in range(0, flat.size, CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` int64 values."""
    weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
    out = np.empty(count, dtype=np.int64)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        first, last = start * bits, stop * bits  # bit offsets; chunks start on byte boundaries
        stream = np.unpackbits(packed[first // 8 : (last + 7) // 8], bitorder="little")
        skip = first % 8
        out[start:stop] = stream[skip : skip + last - first].reshape(-1, bits) @ weights
    return out


def narrow_uints(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """``values`` (non-negative integers) as ``NAME`` in the narrowest type, or bit-packed when
    that type would spend more than the bits its largest value needs."""
    values = np.asarray(values)
    upper = int(values.max(initial=0))
    if values.size and int(values.min()) < 0:
        raise ValueError(f"{name}: negative values cannot be stored unsigned")
    dtype, bits = index_dtype(upper), bits_needed(upper)
    if bits >= 8 * dtype.itemsize or values.size < 64:
        return {name: values.astype(dtype)}
    layout = np.asarray([bits, *values.shape], dtype=np.int64)
    return {f"{name}.packed": pack_bits(values, bits), f"{name}.layout": layout}


def has_uints(tensors: Mapping[str, np.ndarray], name: str) -> bool:
    return name in tensors or f"{name}.packed" in tensors


def read_uints(
    tensors: Mapping[str, np.ndarray], name: str, shape: tuple[int | None, ...], upper: int | None = None
) -> np.ndarray:
    """``NAME`` as int64 of ``shape`` (``None``: any length), every value in 0..upper; stored
    plain (any integer type) or packed. Raises :class:`PackingError` naming what is wrong."""
    if name in tensors:
        values = tensors[name]
        if values.dtype.kind not in "iu":
            raise PackingError(f"tensor {name!r} is {values.dtype}, expected integers")
        values = values.astype(np.int64)
    elif f"{name}.packed" in tensors:
        values = _unpacked(tensors, name)
    else:
        raise PackingError(f"tensor {name!r} is missing")
    if values.ndim != len(shape) or any(w not in (None, n) for w, n in zip(shape, values.shape, strict=True)):
        wanted = "(" + ", ".join("any" if w is None else str(w) for w in shape) + ")"
        raise PackingError(f"tensor {name!r} has shape {tuple(values.shape)}, expected {wanted}")
    if values.size and (values.min() < 0 or (upper is not None and values.max() > upper)):
        raise PackingError(f"tensor {name!r} holds values outside 0..{upper if upper is not None else 'max'}")
    return values


def _unpacked(tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    packed, layout = tensors[f"{name}.packed"], tensors.get(f"{name}.layout")
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise PackingError(f"tensor '{name}.packed' must be a flat uint8 array")
    if layout is None or layout.dtype != np.int64 or layout.ndim != 1 or layout.size < 2:
        raise PackingError(f"tensor '{name}.layout' must be int64: bits, then the shape")
    bits, shape = int(layout[0]), tuple(int(v) for v in layout[1:])
    if not 1 <= bits <= 63 or any(n < 0 for n in shape):
        raise PackingError(f"tensor '{name}.layout' is {layout.tolist()}: bits in 1..63, sizes >= 0")
    count = math.prod(shape)  # Python integers: a hostile layout cannot overflow it
    if count > 8 * packed.size or packed.size != (count * bits + 7) // 8:
        raise PackingError(
            f"tensor '{name}.packed' holds {packed.size} bytes, not {count} values of {bits} bits"
        )
    return unpack_bits(packed, bits, count).reshape(shape)
