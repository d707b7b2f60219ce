"""A trained model in use: top-K items for users, scores, embeddings.

:class:`Recommender` holds what scoring needs and nothing else: the
propagated rows of every user and item, the items each user already has
(excluded from recommendations, as in evaluation) and the dataset's own ids.
``recommend`` answers as ``implicit`` does, with arrays of item ids and
scores per user; every layer and backbone in legcf serves through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.assignment import fit_codes
from legcf_core.errors import ConfigError
from legcf_core.tokens import id_index, id_key, is_tokens


@dataclass(frozen=True)
class FoldIn:
    """What placing a new user needs: item degrees, and the meta rows to solve an assignment on."""

    item_degrees: np.ndarray
    meta_rows: torch.Tensor | None = None  # H_meta, for a model with an assignment
    per_entity: int = 0


class Recommender:
    """Scores s(u, i) = h_u . h_i over propagated rows; ids are the dataset's raw ids.

    ``seen`` (users x items) holds the training interactions, left out of
    recommendations; a model exported without them recommends from all items.
    """

    def __init__(
        self,
        user_rows: torch.Tensor,
        item_rows: torch.Tensor,
        seen: sp.csr_matrix | None,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        fold_in: FoldIn | None = None,
    ) -> None:
        self.user_rows = user_rows
        self.item_rows = item_rows
        self.seen = seen
        self.user_ids = np.asarray(user_ids)
        self.item_ids = np.asarray(item_ids)
        self._user_index = id_index(self.user_ids)
        self._item_index = id_index(self.item_ids)
        if fold_in is None and seen is not None:
            fold_in = FoldIn(np.asarray(seen.sum(axis=0)).ravel())
        self._fold_in = fold_in

    @property
    def n_users(self) -> int:
        return int(self.user_rows.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_rows.shape[0])

    def item_degrees(self) -> np.ndarray:
        """Training interactions of each item (what placing a new user weighs items by)."""
        if self._fold_in is None:
            raise ConfigError("items", "this model keeps no item degrees, so it cannot place new users")
        return np.asarray(self._fold_in.item_degrees)

    def embeddings(self) -> torch.Tensor:
        """Propagated rows of all users, then all items."""
        return torch.cat([self.user_rows, self.item_rows])

    def user_indices(self, users: Sequence[object]) -> np.ndarray:
        """Internal indices of raw user ids; an unknown id is a clear error."""
        return _indices("user", self._user_index, users, is_tokens(self.user_ids))

    def item_indices(self, items: Sequence[object]) -> np.ndarray:
        """Internal indices of raw item ids; an unknown id is a clear error."""
        return _indices("item", self._item_index, items, is_tokens(self.item_ids))

    def score(self, users: Sequence[object], items: Sequence[object]) -> np.ndarray:
        """Scores of every (user, item) pair of the two raw-id lists, users x items."""
        rows = self.user_rows[torch.from_numpy(self.user_indices(users))]
        columns = self.item_rows[torch.from_numpy(self.item_indices(items))]
        return (rows @ columns.T).cpu().numpy()

    def fold_in(self, items: Sequence[object]) -> torch.Tensor:
        """The row of a new user who interacted with ``items``, without gradient steps.

        LightGCN's propagation seen from the new node: sum_i h_i / sqrt(d_i)
        (the 1/sqrt(d_u) and layer weights only scale the row, which ranking
        ignores). With meta rows (a compact model), the row is then written the
        way the compact form writes every entity: t meta rows with
        least-squares weights.
        """
        if len(items) == 0:
            raise ConfigError("items", "must name at least one item the new user interacted with")
        if self._fold_in is None:
            raise ConfigError("items", "this model keeps no item degrees, so it cannot place new users")
        index = torch.from_numpy(self.item_indices(items))
        degrees = torch.from_numpy(np.maximum(self._fold_in.item_degrees, 1).astype(np.float32))
        weights = degrees.to(self.item_rows.device)[index].rsqrt()
        h = (weights[:, None] * self.item_rows[index]).sum(0, keepdim=True)
        if self._fold_in.meta_rows is None:
            return h[0]
        return assign_rows(h, self._fold_in.meta_rows, self._fold_in.per_entity)[0]

    def recommend_for_items(self, items: Sequence[object], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items (raw ids) and scores for a new user given the items they had, those left out."""
        if k < 1:
            raise ConfigError("k", f"must be >= 1, got {k}")
        h = self.fold_in(items)
        scores = self.item_rows @ h
        scores[torch.from_numpy(self.item_indices(items))] = -torch.inf
        top = torch.topk(scores, min(k, self.n_items - len(set(items))))
        return self.item_ids[top.indices.cpu().numpy()], top.values.cpu().numpy()

    def recommend(
        self, users: Sequence[object], k: int = 20, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best items of each user (raw ids, users x k) and their scores, best first;
        items the user interacted with in training are left out unless ``exclude_seen`` is off."""
        top, values = self.top_items(self.user_indices(users), k, exclude_seen)
        return self.item_ids[top], values

    def top_items(
        self, index: np.ndarray, k: int = 20, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` on internal user indices, answering internal item indices: one
        product for the whole batch, which is what a server batching its requests calls."""
        if k < 1:
            raise ConfigError("k", f"must be >= 1, got {k}")
        scores = self.user_rows[torch.from_numpy(index)] @ self.item_rows.T
        if exclude_seen and self.seen is not None:
            seen = self.seen[index].tocoo()
            scores[
                torch.from_numpy(seen.row.astype(np.int64)), torch.from_numpy(seen.col.astype(np.int64))
            ] = -torch.inf
        top = torch.topk(scores, min(k, self.n_items), dim=1)
        return top.indices.cpu().numpy(), top.values.cpu().numpy()


def _indices(kind: str, index: dict[object, int], ids: Sequence[object], tokens: bool) -> np.ndarray:
    """Internal indices of ids as a user gives them (ints or text, whatever the model's kind)."""
    keys = [id_key(raw, tokens) for raw in ids]
    missing = [raw for raw, key in zip(ids, keys, strict=True) if key not in index]
    if missing:
        shown = ", ".join(str(raw) for raw in missing[:5])
        raise ConfigError(kind, f"ids not in the model: {shown}{' ...' if len(missing) > 5 else ''}")
    return np.asarray([index[key] for key in keys], dtype=np.int64)


def assign_rows(h: torch.Tensor, meta_rows: torch.Tensor, per_entity: int) -> torch.Tensor:
    """Rows w H_meta[columns] fitted to ``h``: ``per_entity`` meta rows a row, least-squares weights
    (:func:`legcf_core.assignment.fit_codes`, the fit the compact form gives every entity)."""
    columns, weights = fit_codes(h.cpu(), meta_rows.cpu(), per_entity)
    mixed = torch.from_numpy(weights).to(meta_rows.device)[:, :, None] * meta_rows[torch.from_numpy(columns)]
    return mixed.sum(1)
