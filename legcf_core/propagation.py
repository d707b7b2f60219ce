"""LightGCN propagation and its linear shortcut.

LightGCN's output is linear in its input: H = (1/(L+1)) sum_l Ahat^l H0. In
LEGCF H0 = [S; I] E_meta, so with S fixed H = P E_meta where

    P = (1/(L+1)) sum_{l=0..L} Ahat'^l [S; I]          ((N+c) x c).

P is built once per assignment update; a training step is then one dense
product P E_meta and row gathers, instead of L sparse products per step.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def csr_tensor(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """A torch sparse CSR tensor from trusted arrays, without torch's beta warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def to_torch_csr(matrix: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor on ``device``."""
    matrix = matrix.tocsr()
    tensor = csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)),
        torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(matrix.data.astype(np.float32)),
        matrix.shape,
    )
    return tensor.to(device)


def stacked_input(assignment: sp.csr_matrix) -> sp.csr_matrix:
    """[S; I]: maps the codebook to layer-0 embeddings of all N + c nodes (Eq. 6)."""
    c = assignment.shape[1]
    return sp.vstack([assignment, sp.identity(c, dtype=np.float32, format="csr")]).tocsr()


def linear_operator(adjacency: torch.Tensor, assignment: sp.csr_matrix, layers: int) -> torch.Tensor:
    """P = (1/(L+1)) sum_l Ahat'^l [S; I], dense, on the adjacency's device.

    LightGCN's layer mean (Eq. 7-8) applied to [S; I], written so that each
    layer's input is freed as soon as the next exists: three (N+c) x c buffers at most.
    """
    x = torch.from_numpy(stacked_input(assignment).toarray()).to(adjacency.device)
    total = x.clone()
    for _ in range(layers):
        x = torch.sparse.mm(adjacency, x)
        total += x
    return total.div_(layers + 1)


def layer_operators(
    adjacency: torch.Tensor, assignment: sp.csr_matrix, layers: int, n_entities: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[Ahat'^0 | Ahat'^1 | ... | Ahat'^L] [S; I], dense, split into the N entity rows and the c
    meta rows ((N+c) x (L+1)c in all): with layer weights w_l, H = this times
    :func:`mixed_codebook`. Each layer's block is written as it is made: L+1 blocks and two
    (N+c) x c buffers at most."""
    x = torch.from_numpy(stacked_input(assignment).toarray()).to(adjacency.device)
    c = x.shape[1]
    entity = torch.empty((n_entities, (layers + 1) * c), dtype=x.dtype, device=x.device)
    meta = torch.empty((x.shape[0] - n_entities, (layers + 1) * c), dtype=x.dtype, device=x.device)
    for layer in range(layers + 1):
        if layer:
            x = torch.sparse.mm(adjacency, x)
        entity[:, layer * c : (layer + 1) * c] = x[:n_entities]
        meta[:, layer * c : (layer + 1) * c] = x[n_entities:]
    return entity, meta


def mixed_codebook(codebook: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """[E diag(w_0); ...; E diag(w_L)], (L+1)c x d: what :func:`layer_operators` multiplies."""
    return (mix[:, None, :] * codebook[None]).reshape(-1, codebook.shape[1])
