"""The id codec: how a dataset's own ids are stored in every legcf tensor file, and how an
id a user types is matched against them.

When every id of a side is a plain non-negative integer, the ids are integers: one
tensor ``NAME`` (int64 in ``data.safetensors``, exactly as before tokens existed; as
few bits as they need in exported files). Otherwise they are tokens (any string),
stored as two tensors, never pickled: ``NAME.utf8`` (uint8, the UTF-8 bytes of all
tokens back to back) and ``NAME.offsets`` (integers, length + 1, where token k is
``utf8[offsets[k]:offsets[k+1]]``). Prepare sorts tokens by their UTF-8 bytes; fold-in
appends new ones after them. Both kinds are checked on read like every other array.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from legcf_core.packing import narrow_uints, read_uints
from legcf_core.tensor_files import Malformed, ids_array

MAX_TOKEN_BYTES = 1 << 16  # longer "ids" are a damaged file, not a dataset's ids


def is_tokens(ids: np.ndarray) -> bool:
    """Whether ``ids`` are tokens (strings) rather than integer ids."""
    return ids.dtype == object or ids.dtype.kind in "US"


def as_tokens(ids: np.ndarray) -> np.ndarray:
    """Ids as tokens: integer ids become their decimal text (fold-in, when new ids are text)."""
    return ids if is_tokens(ids) else np.array([str(int(v)) for v in ids], dtype=object)


def id_arrays(name: str, ids: np.ndarray, narrow: bool = False) -> dict[str, np.ndarray]:
    """The tensors that store ``ids`` under ``name``; ``narrow``: integers in as few bits as they need."""
    if not is_tokens(ids):
        return narrow_uints(name, ids) if narrow else {name: np.asarray(ids, dtype=np.int64)}
    encoded = [str(token).encode("utf-8") for token in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    stored = narrow_uints(f"{name}.offsets", offsets) if narrow else {f"{name}.offsets": offsets}
    return {f"{name}.utf8": data, **stored}


def has_ids(arrays: Mapping[str, np.ndarray], name: str) -> bool:
    """Whether ``arrays`` store ids under ``name``, of either kind."""
    return any(key in arrays for key in (name, f"{name}.packed", f"{name}.utf8", f"{name}.offsets"))


def read_ids(arrays: Mapping[str, np.ndarray], name: str, length: int, ordered: bool = True) -> np.ndarray:
    """The ids stored under ``name``: int64 ids, or a str object array of tokens, checked to be
    ``length`` distinct ids (sorted too, where ``ordered``)."""
    text = f"{name}.utf8"
    if text not in arrays and f"{name}.offsets" not in arrays and f"{name}.offsets.packed" not in arrays:
        if ordered:
            return ids_array(arrays, name, length)
        ids = read_uints(arrays, name, (length,))
        if np.unique(ids).size != length:
            raise Malformed(f"tensor {name!r} must hold {length} distinct ids")
        return ids
    if name in arrays or f"{name}.packed" in arrays:
        raise Malformed(f"tensors {name!r} and {text!r} both hold ids; expected one kind")
    tokens = _decode(arrays, name, length)
    if ordered and any(a >= b for a, b in zip(tokens[:-1], tokens[1:], strict=True)):
        raise Malformed(f"tensor {text!r} is not a sorted list of distinct tokens")
    if not ordered and len(set(tokens)) != length:
        raise Malformed(f"tensor {text!r} must hold {length} distinct tokens")
    return np.array(tokens, dtype=object)


def _decode(arrays: Mapping[str, np.ndarray], name: str, length: int) -> list[str]:
    text, offsets_name = f"{name}.utf8", f"{name}.offsets"
    if text not in arrays:
        raise Malformed(f"tensor {text!r} is missing")
    data = arrays[text]
    if data.dtype != np.uint8 or data.ndim != 1:
        raise Malformed(f"tensor {text!r} must be a 1-D uint8 array, got {data.dtype} {tuple(data.shape)}")
    offsets = read_uints(arrays, offsets_name, (length + 1,))
    steps = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != data.size or (steps < 1).any() or (steps > MAX_TOKEN_BYTES).any():
        raise Malformed(
            f"tensor {offsets_name!r} must rise from 0 to {data.size} (the bytes in {text!r}), "
            f"by 1 to {MAX_TOKEN_BYTES} a token"
        )
    blob = data.tobytes()
    bounds = zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    try:
        return [blob[a:b].decode("utf-8") for a, b in bounds]
    except UnicodeDecodeError as exc:
        raise Malformed(f"tensor {text!r} is not UTF-8 ({exc.reason})") from None


def id_index(ids: np.ndarray) -> dict[object, int]:
    """Each id's index, keyed as :func:`id_key` keys what a user asks for."""
    return {key: index for index, key in enumerate(ids.tolist())}


def id_key(raw: object, tokens: bool) -> object:
    """What a user typed (``5``, ``"5"``, ``"u5"``) as a key of :func:`id_index`; None when it
    cannot be an id of this kind (text for integer ids)."""
    if tokens:
        return str(raw)
    if isinstance(raw, (int, np.integer)) and not isinstance(raw, bool):
        return int(raw)
    text = str(raw).strip()
    return int(text) if text.isascii() and text.isdigit() else None


def typed(raw: Sequence[object], tokens: bool) -> list[object]:
    """Ids as the model knows them: str for token ids, int for integer ids where they are integers."""
    keys = [id_key(value, tokens) for value in raw]
    return [value if key is None else key for value, key in zip(raw, keys, strict=True)]


def digest_bytes(ids: np.ndarray) -> Iterable[bytes]:
    """What a dataset fingerprint hashes for ``ids``: the int64 bytes as always, or the token tensors."""
    if not is_tokens(ids):
        return [np.asarray(ids).astype(np.int64).tobytes()]
    arrays = id_arrays("ids", ids)
    return [arrays["ids.offsets"].tobytes(), arrays["ids.utf8"].tobytes()]
