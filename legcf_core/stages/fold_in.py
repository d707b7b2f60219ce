"""``legcf fold-in``: a compact model file plus new interactions in, a compact model file out.

New users (and the new items they bring) are placed by :mod:`legcf_core.foldin`;
everything the model already had is copied unchanged. Pairs of users the model
already has are skipped and counted. Nothing is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.assignment import fit_codes
from legcf_core.compact import CompactForm, form_arrays
from legcf_core.errors import ArtifactError
from legcf_core.foldin import NewInteractions, fold_in_rows, split_new
from legcf_core.packing import narrow_uints
from legcf_core.readers import read_table
from legcf_core.readers.ids import code_columns, trimmed
from legcf_core.stages.export_compact import compact_recommender, id_arrays, interaction_arrays, read_compact
from legcf_core.tokens import as_tokens, is_tokens


def fold_in(model_path: Path, interactions_path: Path, output: Path) -> dict[str, Any]:
    """Add the new users and items of ``interactions_path`` to the compact model at ``model_path``."""
    if art.read_metadata(Path(model_path)).get("kind") != "compact":
        raise ArtifactError(
            f"{model_path} is not a compact model; fold-in adds to what 'legcf export --compact' writes"
        )
    file = read_compact(Path(model_path))
    served, form, meta = compact_recommender(file), file.form, file.meta
    table = read_table(Path(interactions_path))
    users, known_users = ids_alike(table.users, served.user_ids)
    items, known_items = ids_alike(table.items, served.item_ids)
    pairs = sorted(set(zip(users.tolist(), items.tolist(), strict=True)))
    pair_users = np.array([u for u, _ in pairs], dtype=users.dtype)
    pair_items = np.array([i for _, i in pairs], dtype=items.dtype)
    degrees = served.item_degrees()
    new = split_new(pair_users, pair_items, known_users, known_items)
    user_rows, item_rows = fold_in_rows(served.user_rows, served.item_rows, degrees, new)
    out = {
        **form_arrays(extended_form(form, served.n_users, user_rows, item_rows), meta["dtype"]),
        **extended_interactions(served, new),
        **id_arrays("user", np.concatenate([known_users, new.users])),
        **id_arrays("item", np.concatenate([known_items, new.items])),
    }
    n_users, n_items = served.n_users + new.users.size, served.n_items + new.items.size
    version = str(art.format_version("compact"))  # written in today's layout, whatever the input's
    header = {**meta, "format_version": version, "n_users": str(n_users), "n_items": str(n_items)}
    header["folded_users"] = str(int(meta.get("folded_users", 0)) + new.users.size)
    header["folded_items"] = str(int(meta.get("folded_items", 0)) + new.items.size)
    art.write_tensors(Path(output), out, header)
    return {
        "path": str(output),
        "bytes": Path(output).stat().st_size,
        "new_users": int(new.users.size),
        "new_items": int(new.items.size),
        "pairs_skipped": new.skipped,
        "users": n_users,
        "items": n_items,
    }


def ids_alike(column: Any, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A file's id column and the model's ids in one kind: integers when both are, else tokens
    (the file's as written, integer model ids as their decimal text)."""
    import pyarrow as pa

    coded = code_columns([column], "new")
    if coded.tokens is None and not is_tokens(known):
        return coded.codes[0], known
    text = trimmed(column.cast(pa.string())).to_numpy(zero_copy_only=False)
    return np.asarray(text, dtype=object), as_tokens(known)


def extended_form(form: CompactForm, n_users: int, users: torch.Tensor, items: torch.Tensor) -> CompactForm:
    """The form with the new users after the known users and the new items after the known items."""
    if form.rows is not None:
        rows = np.concatenate([form.rows[:n_users], users.numpy(), form.rows[n_users:], items.numpy()])
        return CompactForm(None, None, None, rows)
    meta, codes = torch.from_numpy(form.meta_rows), form.columns.shape[1]
    parts = [fit_codes(rows, meta, codes) for rows in (users, items)]
    columns = np.concatenate([form.columns[:n_users], parts[0][0], form.columns[n_users:], parts[1][0]])
    weights = np.concatenate([form.weights[:n_users], parts[0][1], form.weights[n_users:], parts[1][1]])
    return CompactForm(form.meta_rows, columns, weights, None)


def extended_interactions(served: Any, new: NewInteractions) -> dict[str, np.ndarray]:
    """The seen items with the new users' rows appended, or the item degrees with theirs counted."""
    n_items = served.n_items + new.items.size
    if served.seen is None:
        degrees = np.concatenate([served.item_degrees(), np.zeros(new.items.size)]).astype(np.int64)
        degrees += np.bincount(new.item_columns, minlength=n_items)
        return narrow_uints("item_degrees", degrees)
    added = sp.csr_matrix(
        (np.ones(new.item_columns.size, np.float32), (new.user_rows, new.item_columns)),
        shape=(new.users.size, n_items),
    )
    old = sp.csr_matrix(served.seen, shape=(served.n_users, served.n_items))
    old.resize((served.n_users, n_items))
    seen = sp.vstack([old, added]).tocsr()
    seen.sort_indices()
    return interaction_arrays(seen, keep_seen=True)
