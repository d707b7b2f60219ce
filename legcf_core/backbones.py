"""GNN backbones that propagate layer-0 embeddings over a user-item graph.

* LightGCN (He et al., SIGIR'20): H = mean_l Ahat^l E0, Ahat = D^-1/2 A D^-1/2.
* LightGCN with mixed layers (``lightgcn-mix``, legcf's own): H = sum_l Ahat^l E0 diag(w_l),
  a learned weight per layer and dimension, starting at LightGCN's 1/(L+1): each
  dimension gets its own degree-L polynomial filter of the graph (docs/design.md).
* NGCF (Wang et al., SIGIR'19, Eq. 7): E_{l+1} = LeakyReLU((Ahat + I) E_l W1_l
  + (Ahat E_l * E_l) W2_l), H = [E_0 | E_1 | ... | E_L]. The authors' code
  also L2-normalizes each layer's rows; the paper does not, and neither do
  we (docs/baselines.md measures both).
* LR-GCCF (Chen et al., AAAI'20): E_{l+1} = Ahat_I E_l W_l with
  Ahat_I = D^-1/2 (A + I) D^-1/2, no nonlinearity, H = [E_0 | ... | E_L].

Each backbone normalizes the graph it is given (A, or LEGCF's expanded A')
its own way. Scores are inner products of rows of H. Dropout, which NGCF
uses, is left out: the comparison is about the embedding layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import scipy.sparse as sp
import torch

from legcf_core.graph import normalize_symmetric
from legcf_core.propagation import to_torch_csr

BACKBONE_PREFIX = "backbone."
"""Where a backbone's weights sit in a model's state and files, beside the layer's tensors."""


class Backbone(torch.nn.Module, ABC):
    """The backbone contract: propagate layer-0 rows over a graph it normalizes itself.

    ``Backbone(dim, layers, seed)`` builds one with seeded weights; ``forward(graph,
    x0)`` takes the normalized graph as a torch sparse tensor and returns one output
    row per node, ``output_dim`` wide; scores are inner products of those rows.
    A ``fixed_operator`` backbone computes H = P x0 with P fixed by the graph alone, which lets a
    layer train through P instead of propagating (LEGCF's fast path).
    """

    fixed_operator: ClassVar[bool] = False
    mixes_layers: ClassVar[bool] = False  # H weighs its layers with trained weights (layer_mix)

    def __init__(self, dim: int, layers: int, seed: int = 0) -> None:
        super().__init__()
        self.dim, self.layers = dim, layers

    def layer_mix(self) -> torch.Tensor | None:
        """A fixed-operator backbone's (L+1) x d weights of its layers, H = sum_l Ahat^l E0 diag(w_l);
        None where H is the plain mean over layers (one operator P serves it)."""
        return None

    @property
    @abstractmethod
    def output_dim(self) -> int: ...

    @classmethod
    def weight_shapes(cls, dim: int, layers: int) -> dict[str, tuple[int, ...]]:
        """The shape of every weight in ``state_dict()``, known without building the
        backbone, so a model file's weights are checked before anything is allocated."""
        return {}

    @staticmethod
    @abstractmethod
    def normalize(adjacency: sp.csr_matrix) -> sp.csr_matrix: ...

    @abstractmethod
    def forward(self, adjacency: torch.Tensor, x0: torch.Tensor) -> torch.Tensor: ...


class _SymmetricProduct(torch.autograd.Function):
    """Ahat x for a symmetric sparse Ahat: the backward is Ahat g, not Ahat^T g.

    torch's CSR backward transposes the matrix on every call, which costs
    twice the forward; symmetry makes the transpose unnecessary.
    """

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return torch.sparse.mm(adjacency, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, torch.sparse.mm(ctx.adjacency, grad.contiguous())


def symmetric_product(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Ahat x with a cheap backward; ``adjacency`` must be symmetric."""
    return _SymmetricProduct.apply(adjacency, x)


class LightGCN(Backbone):
    """Parameter-free: the mean of Ahat^l E0 over layers 0..L."""

    fixed_operator = True

    @property
    def output_dim(self) -> int:
        return self.dim

    @staticmethod
    def normalize(adjacency: sp.csr_matrix) -> sp.csr_matrix:
        return normalize_symmetric(adjacency)

    def forward(self, adjacency: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        total, x = x0, x0
        for _ in range(self.layers):
            x = symmetric_product(adjacency, x)
            total = total + x
        return total / (self.layers + 1)


MIX_LR_SCALE = 0.1
"""The layer weights train at this share of the learning rate: at LEGCF's lr 0.1 on ml-1m they
overfit from the second epoch, at 0.01 validation holds (docs/design.md)."""


class MixedLightGCN(LightGCN):
    """LightGCN whose layer mean is learned per dimension: H = sum_l Ahat^l E0 diag(w_l).

    A compositional layer's layer-0 rows are coarse (a few meta-embeddings each) while its
    propagated rows are each entity's own; one weight per layer and dimension lets every
    dimension choose its own filter of the graph. The (L+1) d weights start at 1/(L+1), so
    training starts from LightGCN.
    """

    mixes_layers = True

    def __init__(self, dim: int, layers: int, seed: int = 0) -> None:
        super().__init__(dim, layers, seed)
        self.mix = torch.nn.Parameter(torch.full((layers + 1, dim), 1.0 / (layers + 1)))
        self.mix.lr_scale = MIX_LR_SCALE  # read by schedule.adam

    @classmethod
    def weight_shapes(cls, dim: int, layers: int) -> dict[str, tuple[int, ...]]:
        return {"mix": (layers + 1, dim)}

    def layer_mix(self) -> torch.Tensor:
        return self.mix

    def forward(self, adjacency: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        total, x = x0 * self.mix[0], x0
        for layer in range(1, self.layers + 1):
            x = symmetric_product(adjacency, x)
            total = total + x * self.mix[layer]
        return total


def _glorot(dim_in: int, dim_out: int, generator: torch.Generator) -> torch.nn.Parameter:
    bound = (6.0 / (dim_in + dim_out)) ** 0.5
    return torch.nn.Parameter((torch.rand(dim_in, dim_out, generator=generator) * 2 - 1) * bound)


class NGCF(Backbone):
    """Two weight matrices and biases per layer; nonlinear, so no linear shortcut."""

    def __init__(self, dim: int, layers: int, seed: int = 0) -> None:
        super().__init__(dim, layers, seed)
        generator = torch.Generator().manual_seed(seed + 1)
        self.w1 = torch.nn.ParameterList([_glorot(dim, dim, generator) for _ in range(layers)])
        self.w2 = torch.nn.ParameterList([_glorot(dim, dim, generator) for _ in range(layers)])
        self.b1 = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(dim)) for _ in range(layers)])
        self.b2 = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(dim)) for _ in range(layers)])

    @classmethod
    def weight_shapes(cls, dim: int, layers: int) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for name, shape in (("w1", (dim, dim)), ("w2", (dim, dim)), ("b1", (dim,)), ("b2", (dim,))):
            shapes.update({f"{name}.{layer}": shape for layer in range(layers)})
        return shapes

    @property
    def output_dim(self) -> int:
        return self.dim * (self.layers + 1)

    @staticmethod
    def normalize(adjacency: sp.csr_matrix) -> sp.csr_matrix:
        return normalize_symmetric(adjacency)

    def forward(self, adjacency: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        outputs, x = [x0], x0
        for layer in range(self.layers):
            side = symmetric_product(adjacency, x)
            summed = (side + x) @ self.w1[layer] + self.b1[layer]
            bi = (side * x) @ self.w2[layer] + self.b2[layer]
            x = torch.nn.functional.leaky_relu(summed + bi, negative_slope=0.2)
            outputs.append(x)
        return torch.cat(outputs, dim=1)


class LRGCCF(Backbone):
    """Linear residual GCN: a weight matrix per layer, layers concatenated."""

    def __init__(self, dim: int, layers: int, seed: int = 0) -> None:
        super().__init__(dim, layers, seed)
        generator = torch.Generator().manual_seed(seed + 1)
        self.weights = torch.nn.ParameterList([_glorot(dim, dim, generator) for _ in range(layers)])

    @classmethod
    def weight_shapes(cls, dim: int, layers: int) -> dict[str, tuple[int, ...]]:
        return {f"weights.{layer}": (dim, dim) for layer in range(layers)}

    @property
    def output_dim(self) -> int:
        return self.dim * (self.layers + 1)

    @staticmethod
    def normalize(adjacency: sp.csr_matrix) -> sp.csr_matrix:
        identity = sp.identity(adjacency.shape[0], dtype=adjacency.dtype, format="csr")
        return normalize_symmetric((adjacency + identity).tocsr())

    def forward(self, adjacency: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        outputs, x = [x0], x0
        for layer in range(self.layers):
            x = symmetric_product(adjacency, x) @ self.weights[layer]
            outputs.append(x)
        return torch.cat(outputs, dim=1)


def graph_tensor(backbone: torch.nn.Module, adjacency: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """The backbone's normalized adjacency as a torch CSR tensor."""
    return to_torch_csr(backbone.normalize(adjacency), device)


def backbone_state(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the backbone's weights, named under ``backbone.``."""
    weights = backbone.state_dict().items()
    return {BACKBONE_PREFIX + name: value.detach().cpu().clone() for name, value in weights}


def load_backbone_state(backbone: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load the ``backbone.`` entries of ``state`` into the backbone."""
    n = len(BACKBONE_PREFIX)
    backbone.load_state_dict({k[n:]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)})
