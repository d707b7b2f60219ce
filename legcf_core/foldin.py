"""Fold-in: new users and items into a trained model, without gradient steps.

A new user u who interacted with known items I_u gets the row LightGCN's
propagation would send it, h_u = sum_i h_i / sqrt(d_i) (the 1/sqrt(d_u) and
layer weights only scale the row, which ranking ignores). A new item gets the
same from the users who interacted with it, once they are placed. In a
compact model with meta-embeddings, each new row is then written as t of them
with least-squares weights (:func:`legcf_core.assignment.fit_codes`), as the
compact form writes every entity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from legcf_core.errors import DataError


@dataclass(frozen=True)
class NewInteractions:
    """Pairs naming at least one entity the model does not know, split by what is new."""

    users: np.ndarray  # raw ids of the new users, in order of first appearance
    items: np.ndarray  # raw ids of the new items, likewise
    user_rows: np.ndarray  # per pair: index among new users
    item_columns: np.ndarray  # per pair: item index in the extended catalogue (known, then new)
    skipped: int  # pairs of users the model already has


def split_new(
    pairs_users: np.ndarray, pairs_items: np.ndarray, known_users: np.ndarray, known_items: np.ndarray
) -> NewInteractions:
    """Which pairs add new users (pairs of known users are skipped) and which items are new."""
    known_user = np.isin(pairs_users, known_users)
    users, items = pairs_users[~known_user], pairs_items[~known_user]
    if users.size == 0:
        raise DataError("the new interactions name no user the model does not already have")
    new_users, user_rows = _first_appearance(users)
    item_index = {raw: i for i, raw in enumerate(known_items.tolist())}
    unseen = np.array([i not in item_index for i in items.tolist()], dtype=bool)
    nothing = np.zeros(0, dtype=items.dtype)
    new_items, new_rows = _first_appearance(items[unseen]) if unseen.any() else (nothing, None)
    columns = np.empty(items.size, dtype=np.int64)
    columns[~unseen] = [item_index[i] for i in items[~unseen].tolist()]
    if unseen.any():
        columns[unseen] = known_items.size + new_rows
    return NewInteractions(new_users, new_items, user_rows, columns, int(known_user.sum()))


def _first_appearance(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values in order of first appearance, and each value's index among them."""
    distinct, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return distinct[order], rank[inverse.ravel()]


def degree_weighted_sum(
    rows: torch.Tensor, degrees: np.ndarray, groups: np.ndarray, members: np.ndarray, n_groups: int
) -> torch.Tensor:
    """For each group g: sum over its members m of rows[m] / sqrt(degree[m])."""
    weights = torch.from_numpy(1.0 / np.sqrt(np.maximum(degrees[members], 1)).astype(np.float32))
    weighted = rows[torch.from_numpy(members)] * weights.to(rows.device)[:, None]
    out = torch.zeros((n_groups, rows.shape[1]), dtype=rows.dtype, device=rows.device)
    return out.index_add_(0, torch.from_numpy(groups).to(rows.device), weighted)


def fold_in_rows(
    user_rows: torch.Tensor, item_rows: torch.Tensor, item_degrees: np.ndarray, new: NewInteractions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the new users (from their known items) and of the new items (from those users)."""
    n_known = item_rows.shape[0]
    known = new.item_columns < n_known
    if not np.isin(np.arange(new.users.size), new.user_rows[known]).all():
        raise DataError("every new user needs at least one item the model already has, to be placed")
    users = degree_weighted_sum(
        item_rows, item_degrees, new.user_rows[known], new.item_columns[known], new.users.size
    )
    fresh = ~known
    user_degrees = np.bincount(new.user_rows, minlength=new.users.size)
    items = degree_weighted_sum(
        users, user_degrees, new.item_columns[fresh] - n_known, new.user_rows[fresh], new.items.size
    )
    return users, items
