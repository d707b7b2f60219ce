"""Quotient-remainder compositional embeddings (Shi et al., KDD'20).

Row p is Q[p // r] * R[p % r], element-wise: distinct ids get distinct (q, r)
pairs, and the table stores (r + ceil(N/r)) * d numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from legcf_core import artifacts as art
from legcf_core.errors import ConfigError
from legcf_core.layers import (
    EmbeddingLayer,
    LayerSize,
    check_row_count,
    common_summary,
    stored_dim,
    stored_table,
)


def qr_remainders(n_entities: int, dim: int, budget: int) -> int:
    """The largest remainder count r with (r + ceil(N/r)) * d <= budget.

    r + ceil(N/r) is smallest near sqrt(N); beyond it, a larger r spends more
    of the budget, and the largest such r spends all of it.
    """
    rows = budget // dim
    smallest = math.isqrt(max(n_entities - 1, 0)) + 1
    if smallest + math.ceil(n_entities / smallest) > rows:
        need = (smallest + math.ceil(n_entities / smallest)) * dim
        raise ConfigError(
            "budget", f"{budget} is too small: a QR table needs at least {need} parameters at d={dim}"
        )
    low, high = smallest, n_entities
    while low < high:  # largest r in [smallest, N] that fits: r + ceil(N/r) grows with r there
        mid = (low + high + 1) // 2
        if mid + math.ceil(n_entities / mid) <= rows:
            low = mid
        else:
            high = mid - 1
    return low


class QRLayer(EmbeddingLayer):
    """Row p is Q[p // r] * R[p % r]."""

    name = "qr"
    sized_by_budget = True

    def __init__(self, quotient: torch.Tensor, remainder: torch.Tensor, n_entities: int, budget: int) -> None:
        super().__init__()
        self.quotient = torch.nn.Parameter(quotient.clone())
        self.remainder = torch.nn.Parameter(remainder.clone())
        self.budget = budget
        ids = torch.arange(n_entities)
        self.register_buffer("q_index", ids // remainder.shape[0], persistent=False)
        self.register_buffer("r_index", ids % remainder.shape[0], persistent=False)

    @classmethod
    def create(cls, size: LayerSize) -> QRLayer:
        """Q and R whose product has the variance of a Xavier-initialized full table:
        each factor is uniform(-a, a) with a^2 = sqrt(3) * b, b the Xavier bound."""
        remainders = qr_remainders(size.n_entities, size.dim, size.budget)
        quotients = math.ceil(size.n_entities / remainders)
        bound = (6.0 / (size.n_entities + size.dim)) ** 0.5
        a = (math.sqrt(3.0) * bound) ** 0.5
        generator = torch.Generator().manual_seed(size.seed)
        q = (torch.rand(quotients, size.dim, generator=generator) * 2 - 1) * a
        r = (torch.rand(remainders, size.dim, generator=generator) * 2 - 1) * a
        return cls(q, r, size.n_entities, size.budget)

    def forward(self) -> torch.Tensor:
        return self.quotient.index_select(0, self.q_index) * self.remainder.index_select(0, self.r_index)

    def stored_params(self) -> int:
        return int(self.quotient.numel() + self.remainder.numel())

    def header(self) -> dict[str, str]:
        return {
            "budget": str(self.budget),
            "remainders": str(self.remainder.shape[0]),
            "quotients": str(self.quotient.shape[0]),
        }

    def describe(self, n_users: int) -> dict[str, Any]:
        q, r = int(self.quotient.shape[0]), int(self.remainder.shape[0])
        summary = common_summary(self, n_users, int(self.q_index.numel()), int(self.quotient.shape[1]))
        return {**summary, "per_entity": 2, "quotients": q, "remainders": r}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> QRLayer:
        dim = stored_dim(header)
        q, r = (stored_table(arrays, name, None, dim) for name in ("quotient", "remainder"))
        check_row_count(header, "quotients", "quotient", q.shape[0])
        check_row_count(header, "remainders", "remainder", r.shape[0])
        if q.shape[0] * r.shape[0] < n_entities:
            raise art.Malformed(
                f"{q.shape[0]} quotient and {r.shape[0]} remainder rows cannot cover {n_entities} entities"
            )
        return cls(q, r, n_entities, art.header_int(header, "budget", 0, default=0))
