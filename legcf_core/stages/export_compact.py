"""Export's compact form (``legcf export --compact``), and reading it back as a recommender.

The file holds the serving form of :mod:`legcf_core.compact`, the ids, and,
unless left out, the training interactions as CSR in the narrowest integer
types that hold them (what excluding seen items costs). Without them the file
keeps each item's degree, which placing a new user needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.compact import CompactForm, compact_form, form_arrays, form_from_arrays, index_dtype
from legcf_core.errors import ConfigError
from legcf_core.model import node_outputs
from legcf_core.recommender import FoldIn, Recommender
from legcf_core.stages.inputs import load_data, load_model

COMPACT_FILE = "model.compact.safetensors"
CPU = torch.device("cpu")


def narrow_ids(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Raw ids in the narrowest type, or nothing when they are 0..n-1 (the header says so)."""
    if np.array_equal(ids, np.arange(ids.size)):
        return {}
    return {"ids": ids.astype(index_dtype(int(ids.max(initial=0)))) if ids.min(initial=0) >= 0 else ids}


def seen_arrays(train: sp.csr_matrix, keep_seen: bool) -> dict[str, np.ndarray]:
    if not keep_seen:
        degrees = np.asarray(train.sum(axis=0)).ravel().astype(np.int64)
        return {"item_degrees": degrees.astype(index_dtype(int(degrees.max(initial=0))))}
    return {
        "seen.indptr": train.indptr.astype(index_dtype(train.nnz)),
        "seen.indices": train.indices.astype(index_dtype(train.shape[1] - 1)),
    }


def export_compact(
    run: art.RunDir,
    output: Path | None = None,
    which: str = "auto",
    dtype: str = "float32",
    keep_seen: bool = True,
    codes: int | None = None,
) -> dict[str, Any]:
    """Write the compact serving form; returns what it holds and its size. ``codes``: meta rows
    an entity (default: the model's t), for a layer with an assignment."""
    data = load_data(run)
    chosen = load_model(run, which, data.n_entities)
    model = chosen.model
    codes = resolve_codes(model.layer.assignment, codes)
    form = compact_form(node_outputs(model, data.train, data.n_users, CPU), data.n_entities, codes)
    tensors = compact_tensors(form, data, dtype, keep_seen)
    stored = sum(int(v.size) for k, v in tensors.items() if k in ("meta_rows", "columns", "weights", "rows"))
    meta = art.header(
        "compact",
        dataset=run.load_manifest()["dataset"]["fingerprint"],
        n_users=data.n_users,
        n_items=data.n_items,
        made_by=chosen.trained_by,
        embedding=model.embedding,
        backbone=model.backbone_name,
        dtype=dtype,
        seen=int(keep_seen),
        codes=codes or 0,
        params=stored,
    )
    output = Path(output) if output is not None else run.file(COMPACT_FILE)
    digest = art.write_tensors(output, tensors, meta)
    result = {
        "path": str(output),
        "bytes": output.stat().st_size,
        "form": "compact",
        "dtype": dtype,
        "seen": keep_seen,
        "codes": codes,
        "params": stored,
        "embedding": model.embedding,
        "model": chosen.source,
    }
    entry = {"inputs": run.inputs(art.DATA_FILE), "outputs": {}, "file": str(output), "sha256": digest}
    run.record("export_compact", {**entry, "metrics": result})
    return result


def resolve_codes(assignment: sp.csr_matrix | None, codes: int | None) -> int | None:
    """Meta rows an entity in the compact form: none without an assignment, else ``codes``
    (default: the most nonzeros a row of S has, t)."""
    if assignment is None:
        return None
    if codes is None:
        return int(np.diff(assignment.indptr).max(initial=1))
    if not 1 <= codes <= assignment.shape[1]:
        raise ConfigError("codes", f"must lie in 1..{assignment.shape[1]} (c), got {codes}")
    return codes


def compact_tensors(form: Any, data: Any, dtype: str, keep_seen: bool) -> dict[str, np.ndarray]:
    """The serving form, the seen items (or item degrees) and any ids that are not 0..n-1."""
    tensors = {**form_arrays(form, dtype), **seen_arrays(data.train, keep_seen)}
    for prefix, ids in (("user", data.user_ids), ("item", data.item_ids)):
        tensors.update({f"{prefix}_{k}": v for k, v in narrow_ids(ids).items()})
    return tensors


STORED = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "int16",
}  # the dtype each precision is kept in


def check_compact(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> tuple[int, int, str]:
    """Raise ``Malformed`` unless the arrays are a compact model of the header's sizes."""
    n_users, n_items = art.header_int(meta, "n_users", 1), art.header_int(meta, "n_items", 1)
    dtype = art.header_choice(meta, "dtype", tuple(STORED))
    n = n_users + n_items
    if "rows" in tensors:
        art.require(tensors, "rows", STORED[dtype], (n, None))
    else:
        meta_rows = art.require(tensors, "meta_rows", STORED[dtype], (None, None))
        columns = tensors.get("columns")
        if columns is None or columns.dtype.kind not in "iu" or columns.ndim != 2 or columns.shape[0] != n:
            raise art.Malformed(f"tensor 'columns' must be {n} rows of integer meta-embedding indices")
        if columns.size and (columns.min() < 0 or columns.max() >= meta_rows.shape[0]):
            raise art.Malformed(f"tensor 'columns' holds indices outside 0..{meta_rows.shape[0] - 1}")
        art.require(tensors, "weights", STORED[dtype], columns.shape)
    _check_interactions(tensors, n_users, n_items)
    for name, length in (("user_ids", n_users), ("item_ids", n_items)):
        ids = tensors.get(name)
        if ids is not None and (
            ids.dtype.kind not in "iu" or ids.shape != (length,) or len(np.unique(ids)) != length
        ):
            raise art.Malformed(f"tensor {name!r} must hold {length} distinct integer ids")
    return n_users, n_items, dtype


def _check_interactions(tensors: dict[str, np.ndarray], n_users: int, n_items: int) -> None:
    if "seen.indptr" not in tensors:
        degrees = tensors.get("item_degrees")
        if (
            degrees is None
            or degrees.dtype.kind not in "iu"
            or degrees.shape != (n_items,)
            or (degrees < 0).any()
        ):
            raise art.Malformed(f"a compact model without seen items needs {n_items} item degrees")
        return
    indptr, indices = tensors["seen.indptr"], tensors.get("seen.indices")
    if indices is None or indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise art.Malformed("the seen items need integer 'seen.indptr' and 'seen.indices'")
    steps = np.diff(indptr.astype(np.int64))
    if indptr.shape != (n_users + 1,) or indptr[0] != 0 or (steps < 0).any() or indptr[-1] != indices.size:
        raise art.Malformed(f"tensor 'seen.indptr' must rise from 0 to {indices.size} over {n_users} users")
    if indices.size and indices.max() >= n_items:
        raise art.Malformed(f"tensor 'seen.indices' holds items outside 0..{n_items - 1}")


def load_compact(path: Path, device: torch.device = CPU) -> Recommender:
    """A recommender from a compact file, checked before any array is used."""
    return compact_recommender(*read_compact(path), device)


def read_compact(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], CompactForm]:
    """A compact file's tensors, header and serving form, checked before any array is used."""
    tensors, meta = art.read_tensors(Path(path), kind="compact")
    with art.checked(Path(path)):
        check_compact(tensors, meta)
    return tensors, meta, form_from_arrays(tensors, meta["dtype"])


def compact_recommender(
    tensors: dict[str, np.ndarray], meta: dict[str, str], form: CompactForm, device: torch.device = CPU
) -> Recommender:
    """The recommender a checked compact file (:func:`read_compact`) holds."""
    n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
    h = torch.from_numpy(form.entity_rows()).to(device)
    seen, degrees = None, tensors.get("item_degrees")
    if "seen.indptr" in tensors:
        seen = sp.csr_matrix(
            (
                np.ones(tensors["seen.indices"].size, np.float32),
                tensors["seen.indices"].astype(np.int64),
                tensors["seen.indptr"].astype(np.int64),
            ),
            shape=(n_users, n_items),
        )
        degrees = np.asarray(seen.sum(axis=0)).ravel()
    user_ids = tensors.get("user_ids", np.arange(n_users)).astype(np.int64)
    item_ids = tensors.get("item_ids", np.arange(n_items)).astype(np.int64)
    meta_rows = None if form.meta_rows is None else torch.from_numpy(form.meta_rows).to(device)
    per_entity = 0 if form.columns is None else form.columns.shape[1]
    fold_in = FoldIn(np.asarray(degrees, dtype=np.float32), meta_rows, per_entity)
    return Recommender(h[:n_users], h[n_users:], seen, user_ids, item_ids, fold_in)
