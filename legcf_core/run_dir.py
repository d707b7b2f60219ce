"""The run directory: its manifest (checked against one schema), its lock, and the checks
that tell a stage's outputs are intact and up to date.
"""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: run directories are not locked
    fcntl = None  # type: ignore[assignment]


from legcf_core.errors import ArtifactError
from legcf_core.manifest import ManifestProblem, check_manifest
from legcf_core.store_files import (
    EXPORT_FILE,
    FORMAT,
    FORMAT_VERSION,
    MALFORMED_MANIFEST,
    MANIFEST,
    STAGE_FILES,
    current_umask,
    fsync_directory,
    sha256_file,
    write_json_atomic,
)
from legcf_core.tensor_files import MalformedManifest, short_repr

# ------------------------------------------------------------------ manifest


LOCK_FILE = ".legcf.lock"
_HELD: dict[str, int] = {}  # run directories whose lock this process holds, with nesting depth


def _acquire(lock: Path, stage: str, run_path: Path) -> int:
    """An fd holding an exclusive flock on ``lock``, which then names this process."""
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
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
            raise self._malformed(f"is not valid JSON ({short_repr(exc)})") from None
        except RecursionError:
            raise self._malformed("is nested too deeply to be a legcf manifest") from None
        except OSError as exc:
            raise ArtifactError(f"cannot read {self.manifest_path}: {exc.strerror}") from None
        fields = manifest if isinstance(manifest, dict) else {}
        if fields.get("format", f"{FORMAT}-run") != f"{FORMAT}-run":
            raise ArtifactError(
                f"{self.manifest_path} is not a legcf run manifest "
                f"(format {short_repr(fields['format'], 40)!r}); run 'legcf prepare' into a new directory"
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
            raise self._malformed(f"is malformed: {short_repr(exc, 160)}") from None
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
            fsync_directory(self.path)
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
