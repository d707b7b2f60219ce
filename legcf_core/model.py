"""Trainable recommenders: an embedding table, a backbone and the graph they live on.

Training talks to a model through four calls: ``parameters()``,
``outputs(counts)`` (propagated rows H of all N entities and the L2 term
sum_p counts_p |e_p|^2 over layer-0 rows), ``state()`` / ``load_state()`` for
keeping the best, and, for LEGCF, ``update_assignment()``.

:class:`CodebookModel` is LEGCF on LightGCN through the linear operator P (for
codebooks small enough that the dense P pays, ``spec.operator_pays``);
:class:`GraphModel` propagates explicitly and serves every other pairing of
table and backbone.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core.assignment import update_assignment
from legcf_core.backbones import graph_tensor
from legcf_core.embeddings import CodebookTable
from legcf_core.graph import expanded_adjacency, normalize_symmetric
from legcf_core.inspection import embedding_params
from legcf_core.propagation import linear_operator, to_torch_csr


class CodebookModel:
    """Entity embeddings H = P E_meta over the expanded graph A' = [[A, S], [S^T, 0]].

    P is rebuilt whenever S changes; between changes a forward pass is one
    dense (N+c) x c by c x d product.
    """

    def __init__(
        self,
        adjacency: sp.csr_matrix,
        n_users: int,
        assignment: sp.csr_matrix,
        codebook: torch.Tensor,
        per_entity: int,
        layers: int,
        device: torch.device,
    ) -> None:
        self.adjacency = adjacency
        self.n_users = n_users
        self.n_entities = adjacency.shape[0]
        self.per_entity = per_entity
        self.layers = layers
        self.device = device
        self.codebook = torch.nn.Parameter(codebook.detach().clone().to(device))
        self.set_assignment(assignment)

    @property
    def codebook_size(self) -> int:
        return int(self.codebook.shape[0])

    def set_assignment(self, assignment: sp.csr_matrix) -> None:
        """Install S, regenerate A' and the linear operator P (Algorithm 1, line 11)."""
        self.assignment = assignment.astype("float32").tocsr()
        self.entity_operator = self.meta_operator = None  # free the old P before building the new
        expanded = normalize_symmetric(expanded_adjacency(self.adjacency, self.assignment))
        operator = linear_operator(to_torch_csr(expanded, self.device), self.assignment, self.layers)
        self.entity_operator = operator[: self.n_entities].contiguous()
        self.meta_operator = operator[self.n_entities :].contiguous()

    def entity_embeddings(self) -> torch.Tensor:
        """H_full = P[:N] E_meta (Eq. 9)."""
        return self.entity_operator @ self.codebook

    def meta_embeddings(self) -> torch.Tensor:
        """H_meta = P[N:] E_meta (Eq. 9)."""
        return self.meta_operator @ self.codebook

    def update_assignment(self) -> int:
        """Re-solve S in closed form and rebuild the graph; returns rows that kept their old S."""
        with torch.no_grad():
            h_full, h_meta = self.entity_embeddings(), self.meta_embeddings()
        updated, kept = update_assignment(h_full, h_meta, self.assignment, self.per_entity)
        self.set_assignment(updated)
        return kept

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.codebook]

    def outputs(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """H_full and the batch's L2 sum as tr(E^T W E), W = S^T diag(counts) S (c x c)."""
        gram = torch.from_numpy(l2_gram(self.assignment, counts)).to(self.device, self.codebook.dtype)
        return self.entity_embeddings(), (self.codebook * (gram @ self.codebook)).sum()

    def state(self) -> dict[str, torch.Tensor]:
        return {"codebook": self.codebook.detach().cpu().clone()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.codebook.copy_(state["codebook"].to(self.device))

    def params(self) -> int:
        return embedding_params(tuple(self.codebook.shape), self.assignment)


def l2_gram(assignment: sp.csr_matrix, counts: np.ndarray) -> np.ndarray:
    """W = S^T diag(counts) S, so that sum_p counts_p |s_p E|^2 = tr(E^T W E)."""
    weighted = sp.diags(counts.astype(np.float32)) @ assignment
    return (assignment.T @ weighted).toarray()


class GraphModel:
    """Any layer-0 table through any backbone, by explicit propagation.

    With a :class:`CodebookTable` the graph is LEGCF's expanded A' and the
    assignment update uses the backbone's outputs for entities and for the
    meta nodes (for NGCF and LR-GCCF, their concatenated layers).
    """

    def __init__(
        self,
        table: torch.nn.Module,
        backbone: torch.nn.Module,
        adjacency: sp.csr_matrix,
        n_users: int,
        device: torch.device,
        per_entity: int = 0,
    ) -> None:
        self.table = table.to(device)
        self.backbone = backbone.to(device)
        self.adjacency = adjacency
        self.n_users = n_users
        self.n_entities = adjacency.shape[0]
        self.per_entity = per_entity
        self.device = device
        if isinstance(self.table, CodebookTable):  # its [S; I] must live where the codebook moved
            self.table.set_assignment(self.table.assignment)
        self._build_graph()

    @property
    def assignment(self) -> sp.csr_matrix | None:
        return self.table.assignment if isinstance(self.table, CodebookTable) else None

    def _build_graph(self) -> None:
        graph = self.adjacency
        if self.assignment is not None:
            graph = expanded_adjacency(self.adjacency, self.assignment)
        self.graph = graph_tensor(self.backbone, graph, self.device)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.table.parameters(), *self.backbone.parameters()]

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 rows of every node and the backbone's output rows."""
        x0 = self.table()
        return x0, self.backbone(self.graph, x0)

    def outputs(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x0, h = self.propagate()
        present = np.flatnonzero(counts)
        rows = torch.from_numpy(present).to(self.device)
        weights = torch.from_numpy(counts[present].astype(np.float32)).to(self.device)
        l2 = (weights * x0.index_select(0, rows).pow(2).sum(1)).sum()
        return h[: self.n_entities], l2

    def entity_embeddings(self) -> torch.Tensor:
        return self.propagate()[1][: self.n_entities]

    def update_assignment(self) -> int:
        """LEGCF only: S <- top-t(H_full pinv(H_meta)) on the backbone's outputs."""
        if self.assignment is None:
            raise ValueError("only a LEGCF table has an assignment to update")
        with torch.no_grad():
            h = self.propagate()[1]
        updated, kept = update_assignment(
            h[: self.n_entities], h[self.n_entities :], self.assignment, self.per_entity
        )
        self.table.set_assignment(updated.astype(np.float32).tocsr())
        self._build_graph()
        return kept

    def state(self) -> dict[str, torch.Tensor]:
        state = {name: value.detach().cpu().clone() for name, value in self.table.state_dict().items()}
        for name, value in self.backbone.state_dict().items():
            state[f"backbone.{name}"] = value.detach().cpu().clone()
        return state

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        prefix = "backbone."
        self.table.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)})
        self.backbone.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})

    def params(self) -> int:
        """Numbers the embedding layer stores (backbone weights are not counted, as in the paper)."""
        return self.table.params()
