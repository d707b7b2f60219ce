"""The run directory: manifest, safetensors/CSR read and write, format checks.

This is the only engine module that touches files. Every file is written to a
temporary sibling and renamed into place, so an interrupted stage never
leaves a half-written file where a good one was. Every tensor file carries a
flat ``str -> str`` header (format, version, kind, dataset fingerprint) that
can be read without loading the tensors.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: run directories are not locked
    fcntl = None  # type: ignore[assignment]

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError, safe_open

from legcf_core.errors import ArtifactError
from legcf_core.manifest import ManifestProblem, check_manifest

FORMAT = "legcf"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MALFORMED_MANIFEST = "manifest.malformed.json"  # where prepare keeps a manifest it could not read

DATA_FILE = "data.safetensors"
PARTITION_FILE = "assignment_init.safetensors"
PRETRAIN_FILE = "pretrain.safetensors"
REFINE_FILE = "refine.safetensors"
EXPORT_FILE = "model.safetensors"
STAGE_FILES = {
    "prepare": DATA_FILE,
    "partition": PARTITION_FILE,
    "pretrain": PRETRAIN_FILE,
    "refine": REFINE_FILE,
}


# ---------------------------------------------------------------- atomic I/O


@contextmanager
def _atomic_target(path: Path):
    """Yield a temporary path beside ``path``; rename it into place on success."""
    if path.is_dir():
        raise ArtifactError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ArtifactError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    with _atomic_target(path) as tmp, open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        raise ArtifactError(f"{path} is not a readable safetensors file ({_short(exc)})") from None
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
        raise ArtifactError(f"{path} holds a {_short(meta.get('kind'))!r}, expected a {kind!r}")
    try:
        with safe_open(str(path), framework="np") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({_short(exc)})") from None
    return tensors, meta


def _short(value: object, limit: int = 80) -> str:
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
        raise Malformed(f"header field {key!r} is not an integer: {_short(text, 40)!r}")
    value = int(text)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise Malformed(f"header field {key!r} is {value}, expected {bounds}")
    return value


def header_choice(meta: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    """A header field that must be one of ``choices``."""
    value = meta.get(key)
    if value not in choices:
        shown = "missing" if value is None else repr(_short(value, 40))
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


# ------------------------------------------------------------------ manifest


LOCK_FILE = ".legcf.lock"
_HELD: dict[str, int] = {}  # run directories whose lock this process holds, with nesting depth


def _acquire(lock: Path, stage: str, run_path: Path) -> int:
    """An fd holding an exclusive flock on ``lock``, which then names this process."""
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as exc:
            raise ArtifactError(f"cannot lock {run_path}: {exc.strerror}") from None
        if fcntl is None:  # no flock on this platform: no locking
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ArtifactError(
                    f"{run_path} is in use by another legcf process ({holder}); wait for it to finish, "
                    "or use another run directory"
                ) from None
            raise ArtifactError(f"cannot lock {run_path}: {exc.strerror}") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed while we waited to lock it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, legcf {stage} since {now()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise ArtifactError(f"cannot lock {run_path}: its lock file keeps changing")


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


def _release(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then let go."""
    try:
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Remove the temporary files (``.<name>.*.tmp``) a killed writer left in a run directory.

    Only called with the directory's lock held, so no live legcf writer owns
    them; only names legcf writes there are touched.
    """
    names = (MANIFEST, EXPORT_FILE, *STAGE_FILES.values())
    removed = []
    for path in directory.glob(".*.tmp"):
        if any(path.name.startswith(f".{name}.") for name in names) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """A run directory and its manifest: what each stage made, from what."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    @contextmanager
    def writing(self, stage: str, create: bool = False):
        """Hold the run directory's lock while ``stage`` reads and writes it.

        The lock is an advisory ``flock`` on ``.legcf.lock`` inside the directory,
        which also records the holder's PID and stage. A second writer fails at
        once, naming them; the kernel drops the lock of a killed holder, so a
        stale lock file never blocks. Once the lock is held, temporary files a
        killed writer left behind are removed. Nested use in one process (``run``
        calling each stage) holds the one lock. ``create`` makes the directory
        (prepare); otherwise it must already be a run directory.
        """
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        created = create and not self.path.exists()
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArtifactError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        elif not self.exists():
            self.load_manifest()  # raises: not a run directory
        fd = _acquire(self.file(LOCK_FILE), stage, self.path)
        _HELD[key] = 1
        try:
            remove_stale_temporaries(self.path)
            yield
        except BaseException:
            if created:  # a failed first stage leaves no empty directory behind
                _release(self.file(LOCK_FILE), fd)
                fd = -1
                with suppress(OSError):
                    self.path.rmdir()
            raise
        finally:
            del _HELD[key]
            if fd >= 0:
                _release(self.file(LOCK_FILE), fd)

    def load_manifest(self) -> dict[str, Any]:
        """The manifest, checked against :data:`legcf_core.manifest.MANIFEST`."""
        if not self.manifest_path.is_file():
            raise ArtifactError(
                f"{self.path} is not a legcf run directory (no {MANIFEST}); run 'legcf prepare' first"
            )
        try:
            manifest = json.loads(self.manifest_path.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._malformed(f"is not valid JSON ({_short(exc)})") from None
        except RecursionError:
            raise self._malformed("is nested too deeply to be a legcf manifest") from None
        except OSError as exc:
            raise ArtifactError(f"cannot read {self.manifest_path}: {exc.strerror}") from None
        fields = manifest if isinstance(manifest, dict) else {}
        if fields.get("format", f"{FORMAT}-run") != f"{FORMAT}-run":
            raise ArtifactError(
                f"{self.manifest_path} is not a legcf run manifest "
                f"(format {_short(fields['format'], 40)!r}); run 'legcf prepare' into a new directory"
            )
        version = fields.get("format_version")
        if type(version) is int and version != FORMAT_VERSION:
            raise ArtifactError(
                f"{self.manifest_path} has format version {version}, "
                f"this legcf reads version {FORMAT_VERSION}; run 'legcf prepare' into a new directory"
            )
        try:
            check_manifest(manifest)
        except ManifestProblem as exc:
            raise self._malformed(f"is malformed: {_short(exc, 160)}") from None
        return manifest

    def _malformed(self, what: str) -> MalformedManifest:
        return MalformedManifest(
            f"{self.manifest_path} {what}; run 'legcf prepare' on {self.path} again to start a new "
            f"manifest (the old one is kept as {MALFORMED_MANIFEST}), or prepare into a new directory"
        )

    def set_aside_malformed_manifest(self) -> bool:
        """Rename a malformed manifest to ``manifest.malformed.json`` (prepare starts a new one);
        True if there was one. A manifest of another format or version is left alone."""
        try:
            self.load_manifest()
        except MalformedManifest:
            try:
                os.replace(self.manifest_path, self.file(MALFORMED_MANIFEST))
            except OSError as exc:
                raise ArtifactError(f"cannot rename {self.manifest_path}: {exc.strerror}") from None
            _fsync_directory(self.path)
            return True
        except ArtifactError:
            if self.exists():
                raise
        return False

    def stage(self, name: str) -> dict[str, Any]:
        """A finished stage's manifest entry, with its outputs checked against disk."""
        manifest = self.load_manifest()
        entry = manifest.get("stages", {}).get(name)
        if entry is None:
            raise ArtifactError(f"{self.path} has no '{name}' results; run 'legcf {name} {self.path}' first")
        for filename, digest in entry.get("outputs", {}).items():
            path = self.file(filename)
            if not path.is_file():
                raise ArtifactError(f"{path} is missing; rerun 'legcf {name} {self.path}'")
            if sha256_file(path) != digest:
                raise ArtifactError(
                    f"{path} changed since '{name}' wrote it; rerun 'legcf {name} {self.path}'"
                )
        return entry

    def is_fresh(self, name: str) -> bool:
        """Whether a stage's recorded inputs still match the files on disk."""
        entry = self.load_manifest().get("stages", {}).get(name)
        if entry is None:
            return False
        for filename, digest in entry.get("inputs", {}).items():
            path = self.file(filename)
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True

    def inputs(self, *filenames: str) -> dict[str, str]:
        """Checksums of input artifacts, for a stage entry."""
        return {name: sha256_file(self.file(name)) for name in filenames}

    def record(self, name: str, entry: dict[str, Any], dataset: dict[str, Any] | None = None) -> None:
        """Store a finished stage's entry (config, inputs, outputs, metrics, seconds)."""
        if self.exists():
            manifest = self.load_manifest()
        else:
            manifest = {"format": f"{FORMAT}-run", "format_version": FORMAT_VERSION, "stages": {}}
        if dataset is not None:
            manifest["dataset"] = dataset
        manifest["stages"][name] = {**entry, "finished_at": now()}
        check_manifest(manifest)  # what legcf writes, it must read back
        write_json_atomic(self.manifest_path, manifest)

    def check_dataset(self, meta: dict[str, str], path: Path) -> None:
        """Refuse an artifact made from another dataset than this run's."""
        expected = self.load_manifest().get("dataset", {}).get("fingerprint")
        if meta.get("dataset") != expected:
            raise ArtifactError(
                f"{path} was made from dataset {meta.get('dataset', '?')[:12]}, "
                f"this run's dataset is {str(expected)[:12]}; rerun the stage that made it"
            )
