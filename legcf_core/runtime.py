"""Process-level settings: compute device, threads and the allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

import torch

from legcf_core.errors import DeviceError

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def resolve_device(name: str) -> torch.device:
    """Map ``cpu``, ``cuda`` or ``auto`` to a usable torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but CUDA is not available on this machine")
        return torch.device(name)
    raise DeviceError(f"unknown device {name!r}; expected cpu, cuda or auto")


def keep_freed_memory() -> bool:
    """Ask glibc to keep large freed blocks instead of returning them to the OS.

    Each training batch and evaluation block allocates and frees temporaries
    of hundreds of MB; by default glibc unmaps them and the next batch pays
    page faults again, which doubled epoch and evaluation time here. Returns
    whether the settings took effect (False off glibc).
    """
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    ok_trim = mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    if not (ok_mmap and ok_trim):
        logger.debug("mallopt refused: mmap=%s trim=%s", ok_mmap, ok_trim)
    return bool(ok_mmap and ok_trim)


def release_freed_memory() -> bool:
    """Hand the heap's freed blocks back to the OS now (glibc ``malloc_trim``).

    :func:`keep_freed_memory` keeps them for the next batch's temporaries; sharded
    training calls this once its setup's temporaries (reading its rows, normalizing
    them) are freed, so that they do not count in its memory per rank. Returns
    whether it ran (False off glibc).
    """
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def _glibc(symbol: str) -> Any:
    """The C library's function ``symbol``, or None where there is no such library or function
    (off glibc)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), symbol)
    except (OSError, AttributeError):
        return None
