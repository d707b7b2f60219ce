"""legcf's tensor files: safetensors with a flat header, written deterministically, and
checked on read before any array is used (one ArtifactError naming the file and the fault).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError, safe_open

from legcf_core.errors import ArtifactError
from legcf_core.store_files import (
    DATA_FILE,
    FORMAT,
    FORMAT_VERSION,
    PARTITION_FILE,
    PRETRAIN_FILE,
    REFINE_FILE,
    write_bytes_atomic,
)

# ------------------------------------------------------------ tensor files


def header(kind: str, **fields: Any) -> dict[str, str]:
    """The metadata every legcf tensor file starts with."""
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": kind}
    meta.update({key: str(value) for key, value in fields.items()})
    return meta


_SAFETENSORS_DTYPES = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("uint16"): "U16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


def serialize_tensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """Safetensors bytes with tensors and header keys in sorted order.

    The safetensors library orders its JSON header differently from run to
    run, so equal inputs gave unequal files (and checksums); this writes the
    same format deterministically, so a rerun with the same seed is
    byte-identical. The result reads back with ``safetensors.safe_open``.
    """
    entries: dict[str, Any] = {"__metadata__": {key: metadata[key] for key in sorted(metadata)}}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype not in _SAFETENSORS_DTYPES:
            raise ArtifactError(f"tensor {name!r} has unsupported dtype {array.dtype}")
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        entries[name] = {
            "dtype": _SAFETENSORS_DTYPES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write_tensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: dict[str, str]) -> str:
    """Write a safetensors file atomically; return its sha256."""
    payload = serialize_tensors(tensors, metadata)
    write_bytes_atomic(path, payload)
    return hashlib.sha256(payload).hexdigest()


def read_metadata(path: Path) -> dict[str, str]:
    """The header of a tensor file, checked for format and version, tensors unread."""
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="np") as handle:
            meta = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({short_repr(exc)})") from None
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a legcf artifact (no 'format: {FORMAT}' header)")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        shown = version if version is not None and version.isascii() and version.isdigit() else None
        raise ArtifactError(
            f"{path} has format version {shown or repr(version)[:40]}, "
            f"this legcf reads version {FORMAT_VERSION}; rerun the stage that made it"
        )
    return meta


def read_tensors(path: Path, kind: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a legcf file and its header; ``kind`` must match if given.

    The safetensors parser has already checked that every tensor's bytes lie in
    the file and match its dtype and shape; what the tensors mean is checked by
    whoever reads them (:func:`checked`)."""
    meta = read_metadata(path)
    if kind is not None and meta.get("kind") != kind:
        raise ArtifactError(f"{path} holds a {short_repr(meta.get('kind'))!r}, expected a {kind!r}")
    try:
        with safe_open(str(path), framework="np") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({short_repr(exc)})") from None
    return tensors, meta


def short_repr(value: object, limit: int = 80) -> str:
    """A value for an error line: one line, at most ``limit`` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------- checking what files hold


class MalformedManifest(ArtifactError):
    """A run's manifest is unreadable or breaks the schema; ``legcf prepare`` sets it aside."""


class Malformed(ArtifactError):
    """A tensor file's contents break legcf's format (a missing tensor, a wrong shape,
    an index out of range). Raised while parsing; :func:`checked` adds the file's name."""


REMEDIES = {
    DATA_FILE: "rerun 'legcf prepare'",
    PARTITION_FILE: "rerun 'legcf partition'",
    PRETRAIN_FILE: "rerun 'legcf pretrain'",
    REFINE_FILE: "rerun 'legcf refine'",
}


@contextmanager
def checked(path: Path):
    """Parse a file's tensors inside this block: a :class:`Malformed` becomes one
    :class:`ArtifactError` naming the file, what is wrong and how to remake it."""
    try:
        yield
    except Malformed as exc:
        remedy = REMEDIES.get(Path(path).name, "export the model again with 'legcf export'")
        raise ArtifactError(f"{path} is malformed: {exc}; {remedy}") from None


def header_int(
    meta: Mapping[str, str], key: str, low: int = 0, high: int | None = None, default: int | None = None
) -> int:
    """An integer header field in low..high (``default`` when absent, if given)."""
    text = meta.get(key)
    if text is None:
        if default is not None:
            return default
        raise Malformed(f"header field {key!r} is missing")
    if not re.fullmatch(r"-?[0-9]{1,20}", text):
        raise Malformed(f"header field {key!r} is not an integer: {short_repr(text, 40)!r}")
    value = int(text)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise Malformed(f"header field {key!r} is {value}, expected {bounds}")
    return value


def header_choice(meta: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    """A header field that must be one of ``choices``."""
    value = meta.get(key)
    if value not in choices:
        shown = "missing" if value is None else repr(short_repr(value, 40))
        raise Malformed(f"header field {key!r} is {shown}, expected one of {', '.join(choices)}")
    return value


def require(
    arrays: Mapping[str, np.ndarray], name: str, dtype: str, shape: tuple[int | None, ...]
) -> np.ndarray:
    """``arrays[name]``, checked to exist with ``dtype`` (as written) and ``shape``
    (``None``: any length on that axis); a float array must also be finite."""
    if name not in arrays:
        raise Malformed(f"tensor {name!r} is missing")
    array = arrays[name]
    if array.dtype != np.dtype(dtype):
        raise Malformed(f"tensor {name!r} is {array.dtype}, expected {dtype}")
    if array.ndim != len(shape) or any(w not in (None, n) for w, n in zip(shape, array.shape, strict=True)):
        wanted = "(" + ", ".join("any" if w is None else str(w) for w in shape) + ")"
        raise Malformed(f"tensor {name!r} has shape {tuple(array.shape)}, expected {wanted}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise Malformed(f"tensor {name!r} holds NaN or infinite values")
    return array


def ids_array(arrays: Mapping[str, np.ndarray], name: str, length: int) -> np.ndarray:
    """Raw dataset ids: int64, ``length`` of them, non-negative and strictly increasing."""
    ids = require(arrays, name, "int64", (length,))
    if ids.size and (ids[0] < 0 or not (np.diff(ids) > 0).all()):
        raise Malformed(f"tensor {name!r} is not a sorted list of distinct non-negative ids")
    return ids


def csr_arrays(prefix: str, matrix: sp.csr_matrix, with_data: bool = True) -> dict[str, np.ndarray]:
    """A CSR matrix as ``prefix.indptr/indices[/data]`` arrays (+ its shape)."""
    arrays = {
        f"{prefix}.indptr": matrix.indptr.astype(np.int64),
        f"{prefix}.indices": matrix.indices.astype(np.int32),
        f"{prefix}.shape": np.asarray(matrix.shape, dtype=np.int64),
    }
    if with_data:
        arrays[f"{prefix}.data"] = matrix.data.astype(np.float32)
    return arrays


def csr_from_arrays(
    prefix: str,
    tensors: Mapping[str, np.ndarray],
    shape: tuple[int, int] | None = None,
    with_data: bool | None = None,
) -> sp.csr_matrix:
    """Inverse of :func:`csr_arrays`, checked: ``indptr`` int64 from 0 to nnz and never
    decreasing, ``indices`` int32 within [0, columns), ``shape`` two non-negative int64
    (equal to ``shape`` if given), ``data`` float32 of nnz values (required or refused by
    ``with_data``; absent means all ones). Raises :class:`Malformed`."""
    for part in ("indptr", "indices", "shape"):
        if f"{prefix}.{part}" not in tensors:
            raise Malformed(f"the CSR array '{prefix}.{part}' is missing")
    stored = require(tensors, f"{prefix}.shape", "int64", (2,))
    if (stored < 0).any():
        raise Malformed(f"tensor '{prefix}.shape' is {stored.tolist()}, expected two sizes >= 0")
    rows, columns = (int(v) for v in stored)
    if shape is not None and (rows, columns) != tuple(shape):
        raise Malformed(f"'{prefix}' is {rows} x {columns}, expected {shape[0]} x {shape[1]}")
    indptr = require(tensors, f"{prefix}.indptr", "int64", (rows + 1,))
    indices = require(tensors, f"{prefix}.indices", "int32", (None,))
    if indptr[0] != 0 or indptr[-1] != indices.size or (np.diff(indptr) < 0).any():
        raise Malformed(
            f"tensor '{prefix}.indptr' must rise from 0 to {indices.size} (the number of indices) "
            "without decreasing"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= columns):
        raise Malformed(f"tensor '{prefix}.indices' holds column indices outside 0..{columns - 1}")
    name = f"{prefix}.data"
    if with_data is False and name in tensors:
        raise Malformed(f"tensor {name!r} is not expected")
    if with_data or name in tensors:
        data = require(tensors, name, "float32", (indices.size,))
    else:
        data = np.ones(indices.size, dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(rows, columns))

