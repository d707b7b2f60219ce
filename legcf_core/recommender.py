"""A trained model in use: top-K items for users, scores, embeddings.

:class:`Recommender` holds what scoring needs and nothing else: the
propagated rows of every user and item, the items each user already has
(excluded from recommendations, as in evaluation) and the dataset's own ids.
``recommend`` answers as ``implicit`` does, with arrays of item ids and
scores per user; every layer and backbone in legcf serves through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.errors import ConfigError


class Recommender:
    """Scores s(u, i) = h_u . h_i over propagated rows; ids are the dataset's raw ids."""

    def __init__(
        self,
        user_rows: torch.Tensor,
        item_rows: torch.Tensor,
        seen: sp.csr_matrix,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
    ) -> None:
        self.user_rows = user_rows
        self.item_rows = item_rows
        self.seen = seen
        self.user_ids = np.asarray(user_ids)
        self.item_ids = np.asarray(item_ids)
        self._user_index = {int(raw): index for index, raw in enumerate(self.user_ids)}

    @property
    def n_users(self) -> int:
        return int(self.user_rows.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_rows.shape[0])

    def embeddings(self) -> torch.Tensor:
        """Propagated rows of all users, then all items."""
        return torch.cat([self.user_rows, self.item_rows])

    def user_indices(self, users: Sequence[int]) -> np.ndarray:
        """Internal indices of raw user ids; an unknown id is a clear error."""
        missing = [u for u in users if int(u) not in self._user_index]
        if missing:
            shown = ", ".join(str(u) for u in missing[:5])
            raise ConfigError("user", f"ids not in the model: {shown}{' ...' if len(missing) > 5 else ''}")
        return np.asarray([self._user_index[int(u)] for u in users], dtype=np.int64)

    def score(self, users: Sequence[int], items: Sequence[int]) -> np.ndarray:
        """Scores of every (user, item) pair of the two raw-id lists, users x items."""
        item_index = {int(raw): index for index, raw in enumerate(self.item_ids)}
        unknown = [i for i in items if int(i) not in item_index]
        if unknown:
            raise ConfigError("item", f"ids not in the model: {', '.join(str(i) for i in unknown[:5])}")
        rows = self.user_rows[torch.from_numpy(self.user_indices(users))]
        columns = self.item_rows[torch.as_tensor([item_index[int(i)] for i in items], dtype=torch.long)]
        return (rows @ columns.T).cpu().numpy()

    def recommend(
        self, users: Sequence[int], k: int = 20, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best items of each user (raw ids, users x k) and their scores, best first;
        items the user interacted with in training are left out unless ``exclude_seen`` is off."""
        if k < 1:
            raise ConfigError("k", f"must be >= 1, got {k}")
        index = self.user_indices(users)
        scores = self.user_rows[torch.from_numpy(index)] @ self.item_rows.T
        if exclude_seen:
            seen = self.seen[index].tocoo()
            scores[
                torch.from_numpy(seen.row.astype(np.int64)), torch.from_numpy(seen.col.astype(np.int64))
            ] = -torch.inf
        top = torch.topk(scores, min(k, self.n_items), dim=1)
        return self.item_ids[top.indices.cpu().numpy()], top.values.cpu().numpy()
