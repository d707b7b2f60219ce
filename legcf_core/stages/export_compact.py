"""Export's compact form (``legcf export --compact``), and reading it back as a recommender.

The file holds the serving form of :mod:`legcf_core.compact`, the ids, and,
unless left out, the training interactions as CSR in the narrowest integer
types that hold them (what excluding seen items costs). Without them the file
keeps each item's degree, which placing a new user needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.compact import STORED, CompactForm, compact_form, form_arrays, form_from_arrays
from legcf_core.errors import ConfigError
from legcf_core.model import node_outputs
from legcf_core.packing import has_uints, narrow_uints, read_uints
from legcf_core.recommender import FoldIn, Recommender
from legcf_core.stages.inputs import load_data, load_model
from legcf_core.tokens import has_ids, is_tokens, read_ids
from legcf_core.tokens import id_arrays as token_arrays

COMPACT_FILE = "model.compact.safetensors"
CPU = torch.device("cpu")


def id_arrays(prefix: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Raw ids (integers in as few bits as they need, or tokens), or nothing when they are
    0..n-1 (the reader's default)."""
    if not is_tokens(ids) and np.array_equal(ids, np.arange(ids.size)):
        return {}
    return token_arrays(f"{prefix}_ids", ids, narrow=True)


def interaction_arrays(seen: sp.csr_matrix, keep_seen: bool) -> dict[str, np.ndarray]:
    """The training interactions (what leaving out seen items needs) as narrow CSR, or without
    them each item's degree (what placing a new user needs)."""
    if keep_seen:
        return art.csr_arrays("seen", seen, with_data=False, narrow=True)
    return narrow_uints("item_degrees", np.bincount(seen.indices, minlength=seen.shape[1]))


def export_compact(
    run: art.RunDir,
    output: Path | None = None,
    which: str = "auto",
    dtype: str = "float32",
    keep_seen: bool = True,
    codes: int | None = None,
    fit_rounds: int = 3,
) -> dict[str, Any]:
    """Write the compact serving form; returns what it holds and its size. ``codes``: meta rows
    an entity (default: the model's t), for a layer with an assignment; ``fit_rounds``: rounds
    of refitting the meta rows to the codes (:func:`legcf_core.compact.fit_compact`)."""
    if fit_rounds < 0:
        raise ConfigError("fit_rounds", f"must be >= 0, got {fit_rounds}")
    data = load_data(run)
    chosen = load_model(run, which, data.n_entities)
    model = chosen.model
    codes = resolve_codes(model.layer.assignment, codes, getattr(model.layer, "per_entity", None))
    outputs = node_outputs(model, data.train, data.n_users, CPU)
    form = compact_form(outputs, data.n_entities, codes, fit_rounds)
    tensors = compact_tensors(form, data, dtype, keep_seen)
    stored = sum(
        int(part.size) for part in (form.meta_rows, form.columns, form.weights, form.rows) if part is not None
    )
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
        fit_rounds=fit_rounds if codes else 0,
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
        "fit_rounds": fit_rounds if codes else 0,
        "params": stored,
        "embedding": model.embedding,
        "model": chosen.source,
    }
    entry = {"inputs": run.inputs(art.DATA_FILE), "outputs": {}, "file": str(output), "sha256": digest}
    run.record("export_compact", {**entry, "metrics": result})
    return result


def resolve_codes(
    assignment: sp.csr_matrix | None, codes: int | None, per_entity: int | None = None
) -> int | None:
    """Meta rows an entity in the compact form: none without an assignment, else ``codes``
    (default: the layer's t, the N t weights of its budget; pooled codes give some rows of S up
    to 2t, which a fixed width of 2t would store twice over; else the widest row of S)."""
    if assignment is None:
        return None
    if codes is None:
        widest = int(np.diff(assignment.indptr).max(initial=1))
        return min(per_entity, widest) if per_entity else widest
    if not 1 <= codes <= assignment.shape[1]:
        raise ConfigError("codes", f"must lie in 1..{assignment.shape[1]} (c), got {codes}")
    return codes


def compact_tensors(form: Any, data: Any, dtype: str, keep_seen: bool) -> dict[str, np.ndarray]:
    """The serving form, the seen items (or item degrees) and any ids that are not 0..n-1."""
    return {
        **form_arrays(form, dtype),
        **interaction_arrays(data.seen_before("test") if keep_seen else data.train, keep_seen),
        **id_arrays("user", data.user_ids),
        **id_arrays("item", data.item_ids),
    }


@dataclass
class CompactFile:
    """A compact file's contents, checked: the serving form and what serving needs beside it."""

    meta: dict[str, str]
    form: CompactForm
    seen: sp.csr_matrix | None  # the training interactions, unless the file left them out
    item_degrees: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def n_users(self) -> int:
        return int(self.user_ids.size)

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    def params(self) -> int:
        """Numbers of the serving form: meta rows, columns and weights, or the rows."""
        parts = (self.form.meta_rows, self.form.columns, self.form.weights, self.form.rows)
        return sum(int(part.size) for part in parts if part is not None)


def parse_compact(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> CompactFile:
    """A compact file's arrays as a :class:`CompactFile`; raises ``Malformed`` (or
    ``PackingError``) at the first array that breaks the format."""
    n_users, n_items = art.header_int(meta, "n_users", 1), art.header_int(meta, "n_items", 1)
    dtype = art.header_choice(meta, "dtype", tuple(STORED))
    form = form_from_arrays(tensors, dtype, n_users + n_items)
    if has_uints(tensors, "seen.counts") or has_uints(tensors, "seen.indptr"):
        seen = art.csr_from_arrays("seen", tensors, (n_users, n_items), with_data=False)
        degrees = np.bincount(seen.indices, minlength=n_items)
    elif has_uints(tensors, "item_degrees"):
        seen, degrees = None, read_uints(tensors, "item_degrees", (n_items,))
    else:
        raise art.Malformed(f"a compact model without seen items needs {n_items} item degrees")
    user_ids, item_ids = _ids(tensors, "user_ids", n_users), _ids(tensors, "item_ids", n_items)
    return CompactFile(meta, form, seen, degrees, user_ids, item_ids)


def _ids(tensors: dict[str, np.ndarray], name: str, length: int) -> np.ndarray:
    """Distinct ids, in the order of the rows (fold-in appends new ones unsorted)."""
    if not has_ids(tensors, name):
        return np.arange(length, dtype=np.int64)
    return read_ids(tensors, name, length, ordered=False)


def load_compact(path: Path, device: torch.device = CPU) -> Recommender:
    """A recommender from a compact file, checked before any array is used."""
    return compact_recommender(read_compact(path), device)


def read_compact(path: Path) -> CompactFile:
    """A compact file, every array checked before use (one error naming the file otherwise)."""
    tensors, meta = art.read_tensors(Path(path), kind="compact")
    with art.checked(Path(path)):
        return parse_compact(tensors, meta)


def compact_recommender(file: CompactFile, device: torch.device = CPU) -> Recommender:
    """The recommender a checked compact file holds."""
    h = torch.from_numpy(file.form.entity_rows()).to(device)
    form = file.form
    meta_rows = None if form.meta_rows is None else torch.from_numpy(form.meta_rows).to(device)
    per_entity = 0 if form.columns is None else form.columns.shape[1]
    fold_in = FoldIn(file.item_degrees.astype(np.float32), meta_rows, per_entity)
    seen = None if file.seen is None else file.seen.astype(np.float32)
    n_users = file.n_users
    return Recommender(h[:n_users], h[n_users:], seen, file.user_ids, file.item_ids, fold_in)
