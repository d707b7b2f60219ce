"""Layer-0 embedding tables: what LEGCF is compared against.

Each table maps entity ids (users then items, 0..N-1) to d-dimensional
layer-0 embeddings and knows how many numbers it stores:

* :class:`FullTable`: one free row per entity (the paper's "UD" rows).
* :class:`QRTable`: quotient-remainder compositional embeddings (Shi et al.,
  KDD'20): row p is Q[p // r] * R[p % r], element-wise.
* :class:`PEPTable`: PEP (Liu et al., ICLR'21): a full table whose entries
  are soft-thresholded, sign(v) relu(|v| - sigmoid(s)), with one learnable
  threshold per dimension; after pruning, :class:`SparseTable` retrains the
  surviving entries from their original initial values.
* :class:`CodebookTable`: LEGCF's [S; I] E_meta, for backbones without the
  linear shortcut.

Budgets are solved here too: given a parameter budget, the QR remainder
count and the PEP number of nonzeros.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.errors import ConfigError
from legcf_core.inspection import embedding_params
from legcf_core.propagation import stacked_input, to_torch_csr

EMBEDDINGS = ("legcf", "full", "qr", "pep")
PEP_THRESHOLD_INIT = -10.0  # sigmoid(-10) = 4.5e-5: nothing is pruned at the start


def xavier_uniform(rows: int, dim: int, seed: int) -> torch.Tensor:
    """A rows x dim matrix drawn with Xavier (Glorot) uniform initialization."""
    generator = torch.Generator().manual_seed(seed)
    bound = (6.0 / (rows + dim)) ** 0.5
    return (torch.rand(rows, dim, generator=generator) * 2 - 1) * bound


def legcf_params(n_entities: int, dim: int, codebook_size: int, per_entity: int) -> int:
    """c*d + N*t: the parameter count of a LEGCF configuration, the budget others get."""
    return codebook_size * dim + n_entities * per_entity


# ---------------------------------------------------------------- budgets


def qr_remainders(n_entities: int, dim: int, budget: int) -> int:
    """The largest remainder count r with (r + ceil(N/r)) * d <= budget.

    r + ceil(N/r) is smallest near sqrt(N); beyond it, a larger r spends more
    of the budget, and the largest such r spends all of it.
    """
    rows = budget // dim
    smallest = math.isqrt(max(n_entities - 1, 0)) + 1
    if smallest + math.ceil(n_entities / smallest) > rows:
        need = (smallest + math.ceil(n_entities / smallest)) * dim
        raise ConfigError(f"a QR table needs at least {need} parameters at d={dim}; the budget is {budget}")
    low, high = smallest, n_entities
    while low < high:  # largest r in [smallest, N] that fits: r + ceil(N/r) grows with r there
        mid = (low + high + 1) // 2
        if mid + math.ceil(n_entities / mid) <= rows:
            low = mid
        else:
            high = mid - 1
    return low


def check_budget(budget: int, n_entities: int, dim: int) -> None:
    if budget < 1:
        raise ConfigError(f"--budget must be >= 1 parameter, got {budget}")
    if budget > n_entities * dim:
        raise ConfigError(
            f"--budget {budget} exceeds the full table ({n_entities} x {dim} = {n_entities * dim}); "
            "use --embedding full"
        )


# ----------------------------------------------------------------- tables


class FullTable(torch.nn.Module):
    """One free d-dimensional row per entity."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone())

    def forward(self) -> torch.Tensor:
        return self.weight

    def params(self) -> int:
        return int(self.weight.numel())


class QRTable(torch.nn.Module):
    """Row p is Q[p // r] * R[p % r]; distinct ids get distinct (q, r) pairs."""

    def __init__(self, quotient: torch.Tensor, remainder: torch.Tensor, n_entities: int) -> None:
        super().__init__()
        self.quotient = torch.nn.Parameter(quotient.clone())
        self.remainder = torch.nn.Parameter(remainder.clone())
        r = remainder.shape[0]
        ids = torch.arange(n_entities)
        self.register_buffer("q_index", ids // r, persistent=False)
        self.register_buffer("r_index", ids % r, persistent=False)

    @staticmethod
    def initial(n_entities: int, dim: int, remainders: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Q and R whose product has the variance of a Xavier-initialized full table.

        Each factor is uniform(-a, a) with a^2 = sqrt(3) * b, b the Xavier bound.
        """
        quotients = math.ceil(n_entities / remainders)
        bound = (6.0 / (n_entities + dim)) ** 0.5
        a = (math.sqrt(3.0) * bound) ** 0.5
        generator = torch.Generator().manual_seed(seed)
        q = (torch.rand(quotients, dim, generator=generator) * 2 - 1) * a
        r = (torch.rand(remainders, dim, generator=generator) * 2 - 1) * a
        return q, r

    def forward(self) -> torch.Tensor:
        return self.quotient.index_select(0, self.q_index) * self.remainder.index_select(0, self.r_index)

    def params(self) -> int:
        return int(self.quotient.numel() + self.remainder.numel())


class PEPTable(torch.nn.Module):
    """Soft-thresholded table: sign(v) relu(|v| - sigmoid(s_k)) for dimension k."""

    def __init__(self, weight: torch.Tensor, threshold: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone())
        self.threshold = torch.nn.Parameter(threshold.clone())

    def forward(self) -> torch.Tensor:
        w = self.weight
        return torch.sign(w) * torch.relu(w.abs() - torch.sigmoid(self.threshold))

    def params(self) -> int:
        """Entries that survive the threshold: what a pruned table stores."""
        with torch.no_grad():
            return int((self.weight.abs() > torch.sigmoid(self.threshold)).sum())


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


class SparseTable(torch.nn.Module):
    """A pruned table retrained on its fixed nonzero pattern (PEP's retraining step)."""

    def __init__(self, pattern: sp.csr_matrix, values: torch.Tensor) -> None:
        super().__init__()
        coo = pattern.tocoo()
        self.shape = pattern.shape
        flat = torch.from_numpy((coo.row.astype(np.int64) * pattern.shape[1]) + coo.col)
        self.register_buffer("flat_index", flat, persistent=False)
        self.values = torch.nn.Parameter(values.clone())

    def forward(self) -> torch.Tensor:
        dense = torch.zeros(self.shape[0] * self.shape[1], device=self.values.device, dtype=self.values.dtype)
        return dense.index_put((self.flat_index,), self.values).view(self.shape)

    def params(self) -> int:
        return int(self.values.numel())

    def to_csr(self) -> sp.csr_matrix:
        coo_values = self.values.detach().cpu().numpy()
        flat = self.flat_index.cpu().numpy()
        table = sp.csr_matrix((coo_values, (flat // self.shape[1], flat % self.shape[1])), shape=self.shape)
        table.sort_indices()
        return table.astype(np.float32)


class CodebookTable(torch.nn.Module):
    """LEGCF's layer-0 embeddings of all N + c nodes: [S; I] E_meta (Eq. 6)."""

    def __init__(self, codebook: torch.Tensor, assignment: sp.csr_matrix) -> None:
        super().__init__()
        self.codebook = torch.nn.Parameter(codebook.clone())
        self.set_assignment(assignment)

    def set_assignment(self, assignment: sp.csr_matrix) -> None:
        self.assignment = assignment
        self.stacked = to_torch_csr(stacked_input(assignment), self.codebook.device)

    def forward(self) -> torch.Tensor:
        return torch.sparse.mm(self.stacked, self.codebook)

    def params(self) -> int:
        return embedding_params(tuple(self.codebook.shape), self.assignment)
