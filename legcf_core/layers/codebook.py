"""LEGCF's layer: c meta-embeddings E_meta and a sparse assignment S (N x c, t nonzeros a row).

Layer-0 rows of the expanded graph's N + c nodes are [S; I] E_meta (Eq. 6).
On a linear backbone (LightGCN) and while the dense (N+c) x c operator P pays
for itself, :class:`OperatorModel` trains through H = P E_meta instead of
propagating explicitly; both give the same H, gradients and update.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.assignment import update_assignment
from legcf_core.backbones import backbone_state, load_backbone_state
from legcf_core.graph import expanded_adjacency, normalize_symmetric
from legcf_core.inspection import describe, embedding_bytes, embedding_params
from legcf_core.layers import (
    EmbeddingLayer,
    LayerSize,
    check_row_count,
    stored_dim,
    stored_table,
    xavier_uniform,
)
from legcf_core.propagation import (
    layer_operators,
    linear_operator,
    mixed_codebook,
    stacked_input,
    to_torch_csr,
)
from legcf_core.sizing import legcf_params  # noqa: F401 (the count lives with the sizing rule)

OPERATOR_COST_RATIO = 32
"""How many sparse multiply-adds over A' cost as much as one dense one (2-core CPU, docs/design.md)."""
OPERATOR_MEMORY_SHARE = 0.5
"""Building P holds three (N+c) x c float32 buffers; P is used only while they fit in this share of
the machine's memory, so a graph too large for P trains (slowly) rather than running out of memory."""


def operator_pays(
    n_entities: int,
    codebook_size: int,
    layers: int,
    expanded_nnz: int,
    memory: int | None = None,
    mixed: bool = False,
) -> bool:
    """Whether the dense (N+c) x c operator P beats L sparse passes over A' per training step,
    and its build fits in memory (:func:`operator_declined`)."""
    return operator_declined(n_entities, codebook_size, layers, expanded_nnz, memory, mixed) is None


def operator_declined(
    n_entities: int,
    codebook_size: int,
    layers: int,
    expanded_nnz: int,
    memory: int | None = None,
    mixed: bool = False,
) -> str | None:
    """Why explicit propagation is chosen over the dense operator P; None where P pays.

    P's product grows with c, explicit propagation does not: on Gowalla P wins
    at c = 500 and loses from c of about 2,500 on. Building P takes three
    4(N+c)c-byte buffers, which must fit in OPERATOR_MEMORY_SHARE of ``memory``
    (default: this machine's). With ``mixed`` layers (a weight per layer and dimension) P is
    one block a layer: L+1 times the product, and L+3 buffers to build.
    """
    c = codebook_size
    blocks = layers + 1 if mixed else 1
    dense = (n_entities + c) * c * blocks
    if dense > OPERATOR_COST_RATIO * layers * expanded_nnz:
        return (
            f"c = {c:,} is large against the graph: the dense operator P ({blocks} x (N+c) x c = "
            f"{dense:,} entries) "
            f"costs more per step than {layers} sparse passes over A' ({expanded_nnz:,} nonzeros); "
            "propagating explicitly"
        )
    buffers = blocks + 2 if mixed else 3
    build, memory = buffers * 4 * (n_entities + c) * c, physical_memory() if memory is None else memory
    if build > OPERATOR_MEMORY_SHARE * memory:
        return (
            f"building the dense operator P ({blocks} x (N+c) x c at c = {c:,}) "
            f"takes {build / 1e9:.1f} GB, more than "
            f"{OPERATOR_MEMORY_SHARE:.0%} of this machine's {memory / 1e9:.1f} GB; propagating explicitly"
        )
    return None


def physical_memory() -> int:
    """Bytes of RAM on this machine (POSIX); a large figure where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62


class CodebookLayer(EmbeddingLayer):
    """[S; I] E_meta: each entity a weighted sum of t meta-embeddings, plus the c meta nodes."""

    name = "legcf"
    stored_kind = "codebook"
    uses_partition = True
    refines = True
    updates_assignment = True

    def __init__(self, codebook: torch.Tensor, assignment: sp.csr_matrix, per_entity: int) -> None:
        super().__init__()
        self.codebook = torch.nn.Parameter(codebook.clone())
        self.per_entity = per_entity
        self.known_anchors: np.ndarray | None = None  # METIS parts, while S is still S0
        self.set_assignment(assignment)

    @classmethod
    def create(cls, size: LayerSize) -> CodebookLayer:
        if size.codebook is not None:
            return cls(torch.from_numpy(size.codebook), size.assignment, size.per_entity)
        codebook_size = size.assignment.shape[1]
        return cls(xavier_uniform(codebook_size, size.dim, size.seed), size.assignment, size.per_entity)

    @property
    def assignment(self) -> sp.csr_matrix:
        return self._assignment

    def set_assignment(self, assignment: sp.csr_matrix) -> None:
        self._assignment = assignment.astype(np.float32).tocsr()
        self._stacked: torch.Tensor | None = None  # [S; I], built on first use where the codebook is

    def forward(self) -> torch.Tensor:
        if self._stacked is None or self._stacked.device != self.codebook.device:
            self._stacked = to_torch_csr(stacked_input(self._assignment), self.codebook.device)
        return torch.sparse.mm(self._stacked, self.codebook)

    def graph(self, adjacency: sp.csr_matrix) -> sp.csr_matrix:
        """LEGCF's expanded graph A' = [[A, S], [S^T, 0]] (Eq. 7)."""
        return expanded_adjacency(adjacency, self._assignment)

    def operator_model(self, adjacency: sp.csr_matrix, n_users: int, backbone: Any, device: torch.device):
        if not backbone.fixed_operator or self.propagation_note(adjacency, backbone) is not None:
            return None
        return OperatorModel(self, adjacency, n_users, backbone.layers, device, backbone)

    def propagation_note(self, adjacency: sp.csr_matrix, backbone: Any) -> str | None:
        """On a linear backbone, why P does not pay here (:func:`operator_declined`)."""
        if not backbone.fixed_operator:
            return None
        expanded_nnz = adjacency.nnz + 2 * self._assignment.nnz
        c, mixed = self.codebook.shape[0], backbone.mixes_layers
        return operator_declined(adjacency.shape[0], c, backbone.layers, expanded_nnz, mixed=mixed)

    def update_assignment(self, outputs: torch.Tensor) -> int:
        """S re-solved from H_full and H_meta by ``self.solver`` (pinv: Eq. 10-11); returns rows
        that kept their old S."""
        n = self._assignment.shape[0]
        h_full, h_meta = outputs[:n], outputs[n:]
        updated, kept = update_assignment(h_full, h_meta, self._assignment, self.per_entity, self.solver)
        self.set_assignment(updated)
        return kept

    def stored_params(self) -> int:
        return embedding_params(tuple(self.codebook.shape), self._assignment)

    def stored_bytes(self) -> int:
        return embedding_bytes(tuple(self.codebook.shape), self._assignment)

    def header(self) -> dict[str, str]:
        return {"codebook_size": str(self.codebook.shape[0]), "per_entity": str(self.per_entity)}

    def describe(self, n_users: int) -> dict[str, Any]:
        return describe(tuple(self.codebook.shape), self._assignment, n_users, self.known_anchors)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "codebook": self.codebook.detach().cpu().numpy(),
            **art.csr_arrays("assignment", self._assignment),
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> CodebookLayer:
        codebook = stored_table(arrays, "codebook", None, stored_dim(header))
        c = codebook.shape[0]
        check_row_count(header, "codebook_size", "codebook", c)
        assignment = art.csr_from_arrays("assignment", arrays, (n_entities, c), with_data=True)
        widest = int(np.diff(assignment.indptr).max(initial=1))
        per_entity = art.header_int(header, "per_entity", 1, c, default=max(widest, 1))
        return cls(codebook, assignment.astype(np.float32), per_entity)

    def refine_start(self) -> CodebookLayer:
        return self


class OperatorModel:
    """Entity embeddings H = P E_meta over the expanded graph A' = [[A, S], [S^T, 0]].

    P is rebuilt whenever S changes; between changes a forward pass is one
    dense (N+c) x c by c x d product. Trains the layer's own codebook, and a
    ``backbone``'s layer weights where it mixes its layers (then P holds one block a layer,
    and H = [P_0 ... P_L] [E diag(w_0); ...; E diag(w_L)]).
    """

    def __init__(
        self,
        layer: CodebookLayer,
        adjacency: sp.csr_matrix,
        n_users: int,
        layers: int,
        device: torch.device,
        backbone: torch.nn.Module | None = None,
    ) -> None:
        self.backbone = backbone.to(device) if backbone is not None else None
        self.mix = backbone.layer_mix() if backbone is not None else None
        self.layer = layer.to(device)
        self.adjacency = adjacency
        self.n_users = n_users
        self.n_entities = adjacency.shape[0]
        self.layers = layers
        self.device = device
        self._build_operator()

    @property
    def codebook(self) -> torch.nn.Parameter:
        return self.layer.codebook

    @property
    def assignment(self) -> sp.csr_matrix:
        return self.layer.assignment

    def _build_operator(self) -> None:
        """Regenerate A' and the linear operator P from the current S (Algorithm 1, line 11)."""
        self.entity_operator = self.meta_operator = None  # free the old P before building the new
        normalized = normalize_symmetric(expanded_adjacency(self.adjacency, self.assignment))
        expanded = to_torch_csr(normalized, self.device)
        if self.mix is not None:
            self.entity_operator, self.meta_operator = layer_operators(
                expanded, self.assignment, self.layers, self.n_entities
            )
            return
        operator = linear_operator(expanded, self.assignment, self.layers)
        self.entity_operator = operator[: self.n_entities].contiguous()
        self.meta_operator = operator[self.n_entities :].contiguous()

    def _weights(self) -> torch.Tensor:
        """What P multiplies: E_meta, or with mixed layers E_meta scaled by each layer's weights."""
        return self.codebook if self.mix is None else mixed_codebook(self.codebook, self.mix)

    def entity_embeddings(self) -> torch.Tensor:
        """H_full = P[:N] E_meta (Eq. 9)."""
        return self.entity_operator @ self._weights()

    def meta_embeddings(self) -> torch.Tensor:
        """H_meta = P[N:] E_meta (Eq. 9)."""
        return self.meta_operator @ self._weights()

    def node_outputs(self) -> torch.Tensor:
        """H of all N + c nodes: [H_full; H_meta]."""
        return torch.cat([self.entity_embeddings(), self.meta_embeddings()])

    def set_assignment(self, assignment: sp.csr_matrix) -> None:
        """Install a new S and rebuild P for it."""
        self.layer.set_assignment(assignment)
        self._build_operator()

    def update_assignment(self) -> int:
        """Re-solve S on H = P E_meta (Eq. 10-11), then rebuild P; returns rows kept."""
        with torch.no_grad():
            outputs = torch.cat([self.entity_embeddings(), self.meta_embeddings()])
        kept = self.layer.update_assignment(outputs)
        self._build_operator()
        return kept

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.codebook] if self.mix is None else [self.codebook, self.mix]

    def outputs(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """H_full and the batch's L2 sum as tr(E^T W E), W = S^T diag(counts) S (c x c)."""
        return self.entity_embeddings(), self._l2_sum(l2_gram(self.assignment, counts))

    def row_outputs(self, rows: np.ndarray, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """H at ``rows`` only, P[rows] E_meta, and the batch's L2 sum (``counts`` is zero off
        ``rows``): a training step then costs O(batch c d), not O(N c d)."""
        return self.entity_rows(rows), self._l2_sum(l2_gram(self.assignment[rows], counts[rows]))

    def entity_rows(self, rows: np.ndarray) -> torch.Tensor:
        """H at ``rows`` only: P[rows] E_meta."""
        return self.entity_operator.index_select(0, torch.from_numpy(rows).to(self.device)) @ self._weights()

    def _l2_sum(self, gram: np.ndarray) -> torch.Tensor:
        weights = torch.from_numpy(gram).to(self.device, self.codebook.dtype)
        return (self.codebook * (weights @ self.codebook)).sum()

    def state(self) -> dict[str, torch.Tensor]:
        state = {"codebook": self.codebook.detach().cpu().clone()}
        if self.backbone is not None:
            state.update(backbone_state(self.backbone))
        return state

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.codebook.copy_(state["codebook"].to(self.device))
            if self.backbone is not None:
                load_backbone_state(self.backbone, state)

    def stored_params(self) -> int:
        return self.layer.stored_params()


def l2_gram(assignment: sp.csr_matrix, counts: np.ndarray) -> np.ndarray:
    """W = S^T diag(counts) S, so that sum_p counts_p |s_p E|^2 = tr(E^T W E)."""
    weighted = sp.diags(counts.astype(np.float32)) @ assignment
    return (assignment.T @ weighted).toarray()
