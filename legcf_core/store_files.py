"""Atomic file writes and checksums, and the names of the files a run directory holds.

Every file is written to a temporary sibling, fsynced and renamed into place,
and the directory is fsynced after the rename, so an interrupted write never
leaves a half-written file where a good one was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from legcf_core.errors import ArtifactError

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
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ArtifactError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_directory(directory: Path) -> None:
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


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    with _atomic_target(path) as tmp, open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def open_atomic(path: Path):
    """A binary handle to write ``path`` in pieces (streaming), renamed into place on success."""
    with _atomic_target(path) as tmp, open(tmp, "wb") as handle:
        yield handle
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
