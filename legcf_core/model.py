"""The LEGCF model: a codebook E_meta, a sparse assignment S and the graph they live on."""

from __future__ import annotations

import scipy.sparse as sp
import torch

from legcf_core.assignment import update_assignment
from legcf_core.graph import expanded_adjacency, normalize_symmetric
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
