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
from legcf_core.packing import PackingError, has_uints, narrow_uints, read_uints
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


# Kinds whose layout changed since version 1, and the version written now; older files
# of these kinds are still read (version 2: indices in as few bits as they need).
WRITTEN_VERSIONS = {"export": 2, "compact": 2}


def format_version(kind: str | None) -> int:
    """The version legcf writes for files of ``kind``, and the newest it reads."""
    return WRITTEN_VERSIONS.get(kind or "", FORMAT_VERSION)


def header(kind: str, **fields: Any) -> dict[str, str]:
    """The metadata every legcf tensor file starts with."""
    meta = {"format": FORMAT, "format_version": str(format_version(kind)), "kind": kind}
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
    version, newest = meta.get("format_version"), format_version(meta.get("kind"))
    readable = [str(v) for v in range(1, newest + 1)]
    if version not in readable:
        shown = version if version is not None and version.isascii() and version.isdigit() else None
        reads = f"version {newest}" if newest == 1 else f"versions 1 to {newest}"
        raise ArtifactError(
            f"{path} has format version {shown or repr(version)[:40]}, "
            f"this legcf reads {reads}; rerun the stage that made it"
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
    except (Malformed, PackingError) as exc:
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
    """Raw dataset ids as int64: ``length`` of them (stored in any integer type, or packed),
    non-negative and strictly increasing."""
    ids = read_uints(arrays, name, (length,))
    if ids.size and not (np.diff(ids) > 0).all():
        raise Malformed(f"tensor {name!r} is not a sorted list of distinct non-negative ids")
    return ids


def csr_arrays(
    prefix: str, matrix: sp.csr_matrix, with_data: bool = True, narrow: bool = False
) -> dict[str, np.ndarray]:
    """A CSR matrix as ``prefix.indptr/indices[/data]`` arrays (+ its shape); ``narrow``:
    row lengths ``prefix.counts`` instead of ``indptr``, and both they and the indices in
    as few bits as they need (:mod:`legcf_core.packing`), as exported models store them."""
    if narrow:
        arrays = narrow_csr(prefix, matrix.indptr, matrix.indices)
    else:
        arrays = {
            f"{prefix}.indptr": matrix.indptr.astype(np.int64),
            f"{prefix}.indices": matrix.indices.astype(np.int32),
        }
    arrays[f"{prefix}.shape"] = np.asarray(matrix.shape, dtype=np.int64)
    if with_data:
        arrays[f"{prefix}.data"] = matrix.data.astype(np.float32)
    return arrays


def csr_from_arrays(
    prefix: str,
    tensors: Mapping[str, np.ndarray],
    shape: tuple[int, int] | None = None,
    with_data: bool | None = None,
) -> sp.csr_matrix:
    """Inverse of :func:`csr_arrays` (either form), checked: ``indptr`` rising from 0 to nnz
    without decreasing (or ``counts``, one per row, summing to nnz), ``indices`` within
    [0, columns), ``shape`` two non-negative int64 (equal to ``shape`` if given; optional
    then), ``data`` float32 of nnz values (required or refused by ``with_data``; absent
    means all ones). Raises :class:`Malformed`."""
    rows, columns = _csr_shape(prefix, tensors, shape)
    if not has_uints(tensors, f"{prefix}.indices"):
        raise Malformed(f"the CSR array '{prefix}.indices' is missing")
    indices = read_uints(tensors, f"{prefix}.indices", (None,))
    if has_uints(tensors, f"{prefix}.counts"):
        counts = read_uints(tensors, f"{prefix}.counts", (rows,))
        if int(counts.sum()) != indices.size:
            raise Malformed(f"tensor '{prefix}.counts' must sum to {indices.size} (the number of indices)")
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    elif has_uints(tensors, f"{prefix}.indptr"):
        indptr = read_uints(tensors, f"{prefix}.indptr", (rows + 1,))
        if indptr[0] != 0 or indptr[-1] != indices.size or (np.diff(indptr) < 0).any():
            raise Malformed(
                f"tensor '{prefix}.indptr' must rise from 0 to {indices.size} (the number of indices) "
                "without decreasing"
            )
    else:
        raise Malformed(f"the CSR array '{prefix}.counts' (or '{prefix}.indptr') is missing")
    if indices.size and indices.max() >= columns:
        raise Malformed(f"tensor '{prefix}.indices' holds column indices outside 0..{columns - 1}")
    name = f"{prefix}.data"
    if with_data is False and name in tensors:
        raise Malformed(f"tensor {name!r} is not expected")
    if with_data or name in tensors:
        data = require(tensors, name, "float32", (indices.size,))
    else:
        data = np.ones(indices.size, dtype=np.float32)
    return sp.csr_matrix((data, indices.astype(np.int32), indptr), shape=(rows, columns))


def narrowed(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``tensors`` with every CSR group (``P.indptr`` + ``P.indices``) in the narrow form of
    :func:`csr_arrays`: what an exported model stores, whatever layer wrote the arrays."""
    out = dict(tensors)
    for name in [key for key in tensors if key.endswith(".indptr")]:
        prefix = name.removesuffix(".indptr")
        out.update(narrow_csr(prefix, out.pop(name), out.pop(f"{prefix}.indices")))
    return out


def narrow_csr(prefix: str, indptr: np.ndarray, indices: np.ndarray) -> dict[str, np.ndarray]:
    """A CSR pattern's narrow layout: row lengths ``prefix.counts`` and ``prefix.indices``, each in
    as few bits as it needs."""
    return {
        **narrow_uints(f"{prefix}.counts", np.diff(indptr)),
        **narrow_uints(f"{prefix}.indices", indices),
    }


def _csr_shape(
    prefix: str, tensors: Mapping[str, np.ndarray], shape: tuple[int, int] | None
) -> tuple[int, int]:
    if f"{prefix}.shape" not in tensors:
        if shape is None:
            raise Malformed(f"the CSR array '{prefix}.shape' is missing")
        return shape
    stored = require(tensors, f"{prefix}.shape", "int64", (2,))
    if (stored < 0).any():
        raise Malformed(f"tensor '{prefix}.shape' is {stored.tolist()}, expected two sizes >= 0")
    rows, columns = (int(v) for v in stored)
    if shape is not None and (rows, columns) != tuple(shape):
        raise Malformed(f"'{prefix}' is {rows} x {columns}, expected {shape[0]} x {shape[1]}")
    return rows, columns
