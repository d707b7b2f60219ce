"""The uncompressed table: one free d-dimensional row per entity (the paper's "UD" rows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from legcf_core.errors import ConfigError
from legcf_core.layers import (
    EmbeddingLayer,
    LayerSize,
    common_summary,
    stored_dim,
    stored_table,
    xavier_uniform,
)


class FullLayer(EmbeddingLayer):
    """N x d free rows, Xavier-initialized."""

    name = "full"

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone())

    @classmethod
    def create(cls, size: LayerSize) -> FullLayer:
        return cls(xavier_uniform(size.n_entities, size.dim, size.seed))

    @classmethod
    def dim_within(cls, budget: int, n_entities: int) -> int:
        """The largest d with N*d <= budget."""
        if budget < n_entities:
            raise ConfigError(
                "budget", f"{budget} is below one dimension of a full table ({n_entities} entities)"
            )
        return budget // n_entities

    def forward(self) -> torch.Tensor:
        return self.weight

    def stored_params(self) -> int:
        return int(self.weight.numel())

    def describe(self, n_users: int) -> dict[str, Any]:
        n_entities, dim = self.weight.shape
        return {**common_summary(self, n_users, n_entities, dim), "per_entity": 1}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> FullLayer:
        return cls(stored_table(arrays, "weight", n_entities, stored_dim(header)))
