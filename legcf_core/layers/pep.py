"""PEP, plug-in embedding pruning (Liu et al., ICLR'21).

Pretrain learns a soft-thresholded full table, sign(v) relu(|v| - sigmoid(s_k))
with one learnable threshold per dimension, until at most ``budget`` entries
survive (:class:`PEPLayer`). What survives is stored sparse
(:class:`PrunedLayer`), and refine retrains those entries from their original
initial values with a fresh backbone, as PEP's retraining step does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.layers import (
    EmbeddingLayer,
    LayerSize,
    PretrainSession,
    Trained,
    common_summary,
    stored_dim,
    xavier_uniform,
)

PEP_THRESHOLD_INIT = -10.0  # sigmoid(-10) = 4.5e-5: nothing is pruned at the start


class PEPLayer(EmbeddingLayer):
    """Soft-thresholded table: sign(v) relu(|v| - sigmoid(s_k)) for dimension k."""

    name = "pep"
    sized_by_budget = True
    refines = True

    def __init__(self, weight: torch.Tensor, threshold: torch.Tensor, budget: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone())
        self.threshold = torch.nn.Parameter(threshold.clone())
        self.budget = budget

    @classmethod
    def create(cls, size: LayerSize) -> PEPLayer:
        weight = xavier_uniform(size.n_entities, size.dim, size.seed)
        return cls(weight, torch.full((size.dim,), PEP_THRESHOLD_INIT), size.budget)

    def forward(self) -> torch.Tensor:
        w = self.weight
        return torch.sign(w) * torch.relu(w.abs() - torch.sigmoid(self.threshold))

    def stored_params(self) -> int:
        """Entries that survive the threshold: what a pruned table stores."""
        with torch.no_grad():
            return int((self.weight.abs() > torch.sigmoid(self.threshold)).sum())

    def header(self) -> dict[str, str]:
        return {"budget": str(self.budget)}

    def describe(self, n_users: int) -> dict[str, Any]:
        n_entities, dim = self.weight.shape
        return {**common_summary(self, n_users, n_entities, dim), "per_entity": 1}

    def pretrain(self, session: PretrainSession) -> Trained:
        """Prune to the budget, then keep the surviving entries with their initial values."""
        initial = self.weight.detach().cpu().numpy().copy()
        pruning = session.prune(self, self.budget)
        with torch.no_grad():
            pattern = prune_to_budget(self(), self.budget)
        coo = pattern.tocoo()
        pruned = PrunedLayer(
            pattern,
            torch.from_numpy(pattern.data.copy()),
            initial[coo.row, coo.col].astype(np.float32),
            self.budget,
        )
        return replace(pruning, layer=pruned, valid=session.validate(pruned))

    @classmethod
    def replica(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> PEPLayer:
        """The soft-thresholded table itself (what pruning trains), not the pruned table."""
        weight, threshold = (torch.from_numpy(np.array(arrays[name])) for name in ("weight", "threshold"))
        return cls(weight, threshold, art.header_int(header, "budget", 1))

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> EmbeddingLayer:
        """A stored PEP model is always the pruned table."""
        return PrunedLayer.from_arrays(arrays, header, n_entities)


def prune_to_budget(pruned: torch.Tensor, budget: int) -> sp.csr_matrix:
    """The pruned table as CSR, cut to its ``budget`` largest-magnitude entries if over."""
    dense = pruned.detach().cpu().numpy()
    flat = np.abs(dense).ravel()
    nonzero = int(np.count_nonzero(flat))
    if nonzero > budget:
        cut = np.argpartition(flat, flat.size - budget)[: flat.size - budget]
        dense = dense.copy().ravel()
        dense[cut] = 0.0
        dense = dense.reshape(pruned.shape)
    table = sp.csr_matrix(dense)
    table.eliminate_zeros()
    table.sort_indices()
    return table.astype(np.float32)


class PrunedLayer(EmbeddingLayer):
    """A pruned table on its fixed nonzero pattern; refine retrains it from its initial values."""

    name = "pep"
    refines = True
    refine_fresh_backbone = True

    def __init__(
        self, pattern: sp.csr_matrix, values: torch.Tensor, initial_values: np.ndarray, budget: int
    ) -> None:
        super().__init__()
        coo = pattern.tocoo()
        self.pattern = pattern
        self.shape = pattern.shape
        self.budget = budget
        self.initial_values = initial_values
        flat = torch.from_numpy((coo.row.astype(np.int64) * pattern.shape[1]) + coo.col)
        self.register_buffer("flat_index", flat, persistent=False)
        self.values = torch.nn.Parameter(values.clone())

    @classmethod
    def create(cls, size: LayerSize) -> PrunedLayer:
        raise TypeError("a pruned table is made by pruning a PEPLayer, not created")

    def forward(self) -> torch.Tensor:
        dense = torch.zeros(self.shape[0] * self.shape[1], device=self.values.device, dtype=self.values.dtype)
        return dense.index_put((self.flat_index,), self.values).view(self.shape)

    def stored_params(self) -> int:
        return int(self.values.numel())

    def stored_bytes(self) -> int:
        """float32 values, int64 indptr and int32 indices of the CSR pattern."""
        return int(8 * (self.pattern.shape[0] + 1) + 8 * self.pattern.nnz)

    def header(self) -> dict[str, str]:
        return {"budget": str(self.budget)}

    def describe(self, n_users: int) -> dict[str, Any]:
        n_entities, dim = self.shape
        per_row = np.diff(self.pattern.indptr)
        return {
            **common_summary(self, n_users, n_entities, dim),
            "per_entity": 1,
            "nnz": int(self.pattern.nnz),
            "density": round(self.pattern.nnz / (n_entities * dim), 6),
            "nonzeros_per_row": {
                "min": int(per_row.min()),
                "mean": round(float(per_row.mean()), 3),
                "max": int(per_row.max()),
            },
            "empty_rows": int((per_row == 0).sum()),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.export_arrays(), "initial_values": self.initial_values}

    def export_arrays(self) -> dict[str, np.ndarray]:
        """Scoring needs the pattern and values; only retraining needs the initial values."""
        return {
            "values": self.values.detach().cpu().numpy(),
            **art.csr_arrays("pattern", self.pattern, with_data=False),
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> PrunedLayer:
        pattern = art.csr_from_arrays("pattern", arrays, (n_entities, stored_dim(header)), with_data=False)
        values = np.array(art.require(arrays, "values", "float32", (pattern.nnz,)))
        initial = values
        if "initial_values" in arrays:
            initial = np.array(art.require(arrays, "initial_values", "float32", (pattern.nnz,)))
        budget = art.header_int(header, "budget", 0, default=0)
        return cls(pattern.astype(np.float32), torch.from_numpy(values), initial, budget)

    def refine_start(self) -> PrunedLayer:
        """The same pattern, back at its initial values (PEP's retraining)."""
        return PrunedLayer(
            self.pattern, torch.from_numpy(self.initial_values.copy()), self.initial_values, self.budget
        )
