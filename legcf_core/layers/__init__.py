"""The embedding-layer contract: what every way of making layer-0 embeddings provides.

An embedding layer is a ``torch.nn.Module`` whose ``forward()`` returns the
layer-0 rows of every node of the graph it propagates over (N entities, plus
c meta nodes for LEGCF). Around that, the pipeline needs only what
:class:`EmbeddingLayer` declares: build from a size or budget, count what is
stored, describe it, turn it into arrays and back, and a few capability flags
that say which stages apply. No pipeline code asks a layer for its name.

To add a layer: one module in this package with an :class:`EmbeddingLayer`
subclass, and one :class:`~legcf_core.registry.Entry` in the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.config import MAX_DIM, RefineConfig
from legcf_core.inspection import size_summary


@dataclass(frozen=True)
class LayerSize:
    """What a fresh layer is built from."""

    n_entities: int
    dim: int
    seed: int
    budget: int | None = None  # numbers the layer may store (layers sized by budget)
    assignment: sp.csr_matrix | None = None  # S0, for layers that use the partition
    per_entity: int = 0  # t, for layers that use the partition
    codebook: np.ndarray | None = None  # a starting codebook the partition holds (coded from a teacher)


@dataclass(frozen=True)
class Trained:
    """What a pretrain strategy returns: the layer to store and how it got there."""

    layer: EmbeddingLayer
    valid: dict[str, float]  # validation metrics of ``layer``
    best_epoch: int
    history: list[Any]  # training.EpochLog per epoch
    manifest: dict[str, Any]  # extra fields for the stage's manifest entry


class PretrainSession(Protocol):
    """What a layer's pretrain strategy may ask of the pretrain stage."""

    def fit(self, layer: EmbeddingLayer) -> Trained:
        """BPR training with early stopping; the layer keeps its best state."""

    def prune(self, layer: EmbeddingLayer, budget: int) -> Trained:
        """Train until ``layer.stored_params() <= budget`` (PEP's pruning phase)."""

    def validate(self, layer: EmbeddingLayer) -> dict[str, float]:
        """Validation metrics of ``layer`` through the session's trained backbone."""


class EmbeddingLayer(torch.nn.Module, ABC):
    """Layer-0 embeddings from a compact set of stored numbers."""

    name: ClassVar[str]  # the registry name, written to every artifact's header
    stored_kind: ClassVar[str] = "table"  # the pretrain file's ``kind``
    uses_partition: ClassVar[bool] = False  # built from the partition stage's S0
    sized_by_budget: ClassVar[bool] = False  # its size follows a parameter budget
    refines: ClassVar[bool] = False  # has a refine stage
    updates_assignment: ClassVar[bool] = False  # refine re-solves an assignment S
    solver: str = RefineConfig.solver  # how update_assignment re-solves S; refine sets it

    # ---------------------------------------------------------------- build

    @classmethod
    @abstractmethod
    def create(cls, size: LayerSize) -> EmbeddingLayer:
        """A freshly initialized layer (seeded)."""

    @classmethod
    def dim_within(cls, budget: int, n_entities: int) -> int | None:
        """The d this layer takes to fit ``budget``, if a budget sets its width."""
        return None

    # ----------------------------------------------------------- propagate

    @abstractmethod
    def forward(self) -> torch.Tensor:
        """Layer-0 rows of every node of :meth:`graph`'s graph."""

    def graph(self, adjacency: sp.csr_matrix) -> sp.csr_matrix:
        """The graph a backbone propagates this layer over (default: the user-item graph)."""
        return adjacency

    def operator_model(self, adjacency: sp.csr_matrix, n_users: int, backbone: Any, device: torch.device):
        """A faster trainable model than explicit propagation, where one exists; else None."""
        return None

    def propagation_note(self, adjacency: sp.csr_matrix, backbone: Any) -> str | None:
        """Why this layer propagates explicitly although it has a faster model for ``backbone``
        (said as a note); None when it does not."""
        return None

    # ---------------------------------------------------------------- size

    @abstractmethod
    def stored_params(self) -> int:
        """Numbers the layer stores (backbone weights are not counted, as in the paper)."""

    def stored_bytes(self) -> int:
        """Bytes of the stored numbers at float32 (sparse parts as CSR)."""
        return 4 * self.stored_params()

    def header(self) -> dict[str, str]:
        """Header fields that say how this layer was sized."""
        return {}

    @abstractmethod
    def describe(self, n_users: int) -> dict[str, Any]:
        """What ``legcf inspect`` shows of this layer (see :func:`common_summary`)."""

    # ------------------------------------------------------------- storage

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything the layer stores, by tensor name (default: its state)."""
        return {name: value.detach().cpu().numpy() for name, value in self.state_dict().items()}

    def export_arrays(self) -> dict[str, np.ndarray]:
        """What an exported model needs to score (default: all of :meth:`arrays`)."""
        return self.arrays()

    @classmethod
    @abstractmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> EmbeddingLayer:
        """Inverse of :meth:`arrays` with :meth:`header`."""

    @classmethod
    def replica(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> EmbeddingLayer:
        """This layer in a worker process, from what rank 0 holds (:meth:`arrays`, :meth:`header`);
        a layer whose training form is not its stored form rebuilds itself here."""
        return cls.from_arrays(arrays, header, n_entities)

    # ------------------------------------------------------------ training

    def pretrain(self, session: PretrainSession) -> Trained:
        """Pretrain's strategy: by default, BPR training with early stopping."""
        return session.fit(self)

    def refine_start(self) -> EmbeddingLayer | None:
        """The layer refine trains from, or None when this layer has no refine stage."""
        return None

    refine_fresh_backbone: ClassVar[bool] = False  # refine starts from a new backbone

    def update_assignment(self, outputs: torch.Tensor) -> int:
        """Re-solve the assignment from all nodes' propagated rows; returns rows kept."""
        raise NotImplementedError(f"the {self.name} layer has no assignment to update")

    @property
    def assignment(self) -> sp.csr_matrix | None:
        """The current assignment S, for layers that have one."""
        return None


def common_summary(layer: EmbeddingLayer, n_users: int, n_entities: int, dim: int) -> dict[str, Any]:
    """The inspect fields every layer shares (:func:`~legcf_core.inspection.size_summary`)."""
    return size_summary(n_entities, n_users, dim, layer.stored_params(), layer.stored_bytes())


def xavier_uniform(rows: int, dim: int, seed: int) -> torch.Tensor:
    """A rows x dim matrix drawn with Xavier (Glorot) uniform initialization."""
    generator = torch.Generator().manual_seed(seed)
    bound = (6.0 / (rows + dim)) ** 0.5
    return (torch.rand(rows, dim, generator=generator) * 2 - 1) * bound


def stored_dim(header: Mapping[str, str]) -> int:
    """The model's d from a file's header (checked: an integer in 1..MAX_DIM)."""
    return art.header_int(header, "dim", 1, MAX_DIM)


def stored_table(arrays: Mapping[str, np.ndarray], name: str, rows: int | None, dim: int) -> torch.Tensor:
    """A stored float32 ``rows x dim`` table (``rows`` None: any), checked, as a tensor.

    Every layer's ``from_arrays`` reads its tables through this (or
    :func:`legcf_core.artifacts.require` / ``csr_from_arrays``), so a file with a
    missing, mistyped, misshapen or non-finite table is refused before any use.
    """
    table = art.require(arrays, name, "float32", (rows, dim))
    if table.shape[0] < 1:
        raise art.Malformed(f"tensor {name!r} has no rows")
    return torch.from_numpy(np.array(table))


def check_row_count(header: Mapping[str, str], key: str, name: str, rows: int) -> None:
    """A header field that records a table's row count (if present) must match the table."""
    if art.header_int(header, key, 1, default=rows) != rows:
        raise art.Malformed(f"header field {key!r} says {header[key]}, tensor {name!r} has {rows} rows")
