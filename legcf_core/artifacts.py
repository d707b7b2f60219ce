"""The run directory: manifest, safetensors/CSR read and write, format checks.

This is the only engine module that touches files. Every file is written to a
temporary sibling and renamed into place, so an interrupted stage never
leaves a half-written file where a good one was. Every tensor file carries a
flat ``str -> str`` header (format, version, kind, dataset fingerprint) that
can be read without loading the tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError, safe_open

from legcf_core.errors import ArtifactError

FORMAT = "legcf"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

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
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ArtifactError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a legcf artifact (no 'format: {FORMAT}' header)")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise ArtifactError(
            f"{path} has format version {meta.get('format_version')}, "
            f"this legcf reads version {FORMAT_VERSION}; rerun the stage that made it"
        )
    return meta


def read_tensors(path: Path, kind: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a legcf file and its header; ``kind`` must match if given."""
    meta = read_metadata(path)
    if kind is not None and meta.get("kind") != kind:
        raise ArtifactError(f"{path} holds a {meta.get('kind')!r}, expected a {kind!r}")
    with safe_open(str(path), framework="np") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    return tensors, meta


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


def csr_from_arrays(prefix: str, tensors: Mapping[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of :func:`csr_arrays`; a missing ``data`` array means all ones."""
    try:
        indptr = tensors[f"{prefix}.indptr"]
        indices = tensors[f"{prefix}.indices"]
        shape = tuple(int(v) for v in tensors[f"{prefix}.shape"])
    except KeyError as exc:
        raise ArtifactError(f"artifact lacks the CSR array {exc.args[0]!r}") from None
    data = tensors.get(f"{prefix}.data", np.ones(indices.size, dtype=np.float32))
    return sp.csr_matrix((data, indices, indptr), shape=shape)


# ------------------------------------------------------------------ manifest


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

    def load_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise ArtifactError(
                f"{self.path} is not a legcf run directory (no {MANIFEST}); run 'legcf prepare' first"
            )
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{self.manifest_path} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != f"{FORMAT}-run":
            raise ArtifactError(f"{self.manifest_path} is not a legcf run manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{self.manifest_path} has format version {manifest.get('format_version')}, "
                f"this legcf reads version {FORMAT_VERSION}; run 'legcf prepare' into a new directory"
            )
        return manifest

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
        write_json_atomic(self.manifest_path, manifest)

    def check_dataset(self, meta: dict[str, str], path: Path) -> None:
        """Refuse an artifact made from another dataset than this run's."""
        expected = self.load_manifest().get("dataset", {}).get("fingerprint")
        if meta.get("dataset") != expected:
            raise ArtifactError(
                f"{path} was made from dataset {meta.get('dataset', '?')[:12]}, "
                f"this run's dataset is {str(expected)[:12]}; rerun the stage that made it"
            )


# ------------------------------------------------------ whole run directories


def remove_run_dir(path: Path) -> None:
    """Delete a run directory and everything under it (an interrupted run being started over)."""
    import shutil  # kept local: only the comparison harness removes whole directories

    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise ArtifactError(f"cannot remove {path}: {exc.strerror}") from None


def move_run_dir(path: Path, target: Path) -> Path:
    """Move a run directory to ``target``, creating its parent; nothing is deleted. Returns ``target``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        Path(path).rename(target)
    except OSError as exc:
        raise ArtifactError(f"cannot move {path} to {target}: {exc.strerror}") from None
    return target
