"""The id codec: how a dataset's own ids are stored in every legcf tensor file.

When every id of a side is a plain non-negative integer, the ids are one int64 tensor
``NAME``, exactly as before tokens existed. Otherwise they are tokens (any string) and
are stored as two tensors, never pickled: ``NAME.utf8`` (uint8, the UTF-8 bytes of all
tokens back to back) and ``NAME.offsets`` (int64, length + 1, where token k is
``utf8[offsets[k]:offsets[k+1]]``). Tokens are sorted by their UTF-8 bytes and distinct.
Both kinds are checked on read like every other array.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from legcf_core.tensor_files import Malformed, ids_array, require

MAX_TOKEN_BYTES = 1 << 16  # longer "ids" are a damaged file, not a dataset's ids


def is_tokens(ids: np.ndarray) -> bool:
    """Whether ``ids`` are tokens (strings) rather than integer ids."""
    return ids.dtype == object or ids.dtype.kind in "US"


def id_arrays(name: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The tensors that store ``ids`` under ``name``."""
    if not is_tokens(ids):
        return {name: np.asarray(ids, dtype=np.int64)}
    encoded = [str(token).encode("utf-8") for token in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return {f"{name}.utf8": data, f"{name}.offsets": offsets}


def read_ids(arrays: Mapping[str, np.ndarray], name: str, length: int) -> np.ndarray:
    """The ids stored under ``name``: int64 ids, or a str object array of tokens, checked."""
    text, offsets_name = f"{name}.utf8", f"{name}.offsets"
    if name in arrays and (text in arrays or offsets_name in arrays):
        raise Malformed(f"tensors {name!r} and {text!r} both hold ids; expected one kind")
    if name in arrays or (text not in arrays and offsets_name not in arrays):
        return ids_array(arrays, name, length)
    data = require(arrays, text, "uint8", (None,))
    offsets = require(arrays, offsets_name, "int64", (length + 1,))
    steps = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != data.size or (steps < 1).any() or (steps > MAX_TOKEN_BYTES).any():
        raise Malformed(
            f"tensor {offsets_name!r} must rise from 0 to {data.size} (the bytes in {text!r}), "
            f"by 1 to {MAX_TOKEN_BYTES} a token"
        )
    blob = data.tobytes()
    try:
        tokens = [
            blob[a:b].decode("utf-8")
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        ]
    except UnicodeDecodeError as exc:
        raise Malformed(f"tensor {text!r} is not UTF-8 ({exc.reason})") from None
    if any(a >= b for a, b in zip(tokens[:-1], tokens[1:], strict=True)):
        raise Malformed(f"tensor {text!r} is not a sorted list of distinct tokens")
    return np.array(tokens, dtype=object)


def token_index(ids: np.ndarray) -> dict[object, int]:
    """Each id's index, keyed by the id as a user writes it (int for integer ids, else str)."""
    if is_tokens(ids):
        return {str(token): index for index, token in enumerate(ids)}
    return {int(raw): index for index, raw in enumerate(ids)}


def digest_bytes(ids: np.ndarray) -> Iterable[bytes]:
    """What a dataset fingerprint hashes for ``ids``: the int64 bytes as always, or the token tensors."""
    if not is_tokens(ids):
        return [np.asarray(ids).astype(np.int64).tobytes()]
    arrays = id_arrays("ids", ids)
    return [arrays["ids.offsets"].tobytes(), arrays["ids.utf8"].tobytes()]
