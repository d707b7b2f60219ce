"""A recommender as stored, and as trained: an embedding layer, a backbone and the graph.

:class:`StoredModel` is what an artifact holds (the layer's arrays, the
backbone's weights and the header fields that say how they were made);
:func:`trainable` puts it on a device over a training graph. Training talks
to the result through :class:`~legcf_core.training.TrainableModel`.
:class:`PropagationModel` propagates explicitly and serves every pairing of
layer and backbone; a layer may offer a faster model of its own
(``EmbeddingLayer.operator_model``, e.g. LEGCF's P on LightGCN).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.backbones import BACKBONE_PREFIX, Backbone, backbone_state, graph_tensor, load_backbone_state
from legcf_core.config import MAX_DIM, MAX_LAYERS, MAX_SEED
from legcf_core.errors import ConfigError
from legcf_core.graph import bipartite_adjacency
from legcf_core.layers import EmbeddingLayer
from legcf_core.registry import backbone_type, layer_type

_NOT_LAYER = ("train.", "user_ids", "item_ids", "parts")  # what exports and run files hold besides


@dataclass
class StoredModel:
    """A model as an artifact holds it: layer, backbone weights, and the settings that built them."""

    layer: EmbeddingLayer
    backbone: Backbone
    backbone_name: str
    dim: int
    layers: int
    seed: int

    @property
    def embedding(self) -> str:
        return self.layer.name

    def stored_params(self) -> int:
        return self.layer.stored_params()

    def stored_bytes(self) -> int:
        return self.layer.stored_bytes()

    def backbone_params(self) -> int:
        """The backbone's trained weights (LightGCN none; mixed layers (L+1) d): stored beside
        the embedding layer, and not in its ``stored_params`` (the paper counts the layer)."""
        return sum(value.numel() for value in self.backbone.state_dict().values())

    def header(self) -> dict[str, object]:
        return {
            "embedding": self.layer.name,
            "backbone": self.backbone_name,
            "dim": self.dim,
            "layers": self.layers,
            "seed": self.seed,
            **self.layer.header(),
        }

    def arrays(self, export: bool = False) -> dict[str, np.ndarray]:
        """The layer's arrays (for an export, only what scoring needs) and the backbone's weights."""
        arrays = self.layer.export_arrays() if export else self.layer.arrays()
        for name, value in self.backbone.state_dict().items():
            arrays[BACKBONE_PREFIX + name] = value.detach().cpu().numpy()
        return arrays

    def state(self) -> dict[str, torch.Tensor]:
        """Trainable tensors by name, as a trainable model's ``state()`` gives them."""
        return joint_state(self.layer, self.backbone)

    def load_state(self, state: Mapping[str, torch.Tensor], assignment: sp.csr_matrix | None = None) -> None:
        """Install a trained state (and, for a layer with one, its assignment S)."""
        load_split_state(self.layer, self.backbone, state)
        if assignment is not None:
            self.layer.set_assignment(assignment)


def joint_state(layer: torch.nn.Module, backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the layer's state and the backbone's, the latter under ``backbone.``."""
    state = {name: value.detach().cpu().clone() for name, value in layer.state_dict().items()}
    return {**state, **backbone_state(backbone)}


def load_split_state(
    layer: torch.nn.Module, backbone: torch.nn.Module, state: Mapping[str, torch.Tensor]
) -> None:
    """Load ``backbone.``-prefixed entries into the backbone, the rest into the layer."""
    with torch.no_grad():
        layer.load_state_dict({k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)})
        load_backbone_state(backbone, state)


def new_backbone(name: str, dim: int, layers: int, seed: int) -> Backbone:
    """A freshly initialized backbone (seeded) of the registered kind ``name``."""
    return backbone_type(name)(dim, layers, seed)


def stored_model_from_arrays(
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, str], path: Path | str, n_entities: int
) -> StoredModel:
    """Inverse of :meth:`StoredModel.arrays` with the header, every part checked before
    use (header fields, the layer's arrays, the backbone's weights); legcf 0.1 files
    lack the embedding and backbone fields and are LEGCF on LightGCN."""
    with art.checked(Path(path)):
        embedding, backbone_name = meta.get("embedding", "legcf"), meta.get("backbone", "lightgcn")
        try:
            kind, backbone_kind = layer_type(embedding), backbone_type(backbone_name)
        except ConfigError as exc:
            raise art.Malformed(f"header field {exc.render()}") from None
        dim = art.header_int(meta, "dim", 1, MAX_DIM)
        layers = art.header_int(meta, "layers", 0, MAX_LAYERS)
        seed = art.header_int(meta, "seed", 0, MAX_SEED, default=0)
        layer_arrays = {k: v for k, v in arrays.items() if not k.startswith((BACKBONE_PREFIX, *_NOT_LAYER))}
        layer = kind.from_arrays(layer_arrays, meta, n_entities)
        n = len(BACKBONE_PREFIX)
        shapes = {BACKBONE_PREFIX + k: v for k, v in backbone_kind.weight_shapes(dim, layers).items()}
        unexpected = sorted(k for k in arrays if k.startswith(BACKBONE_PREFIX) and k not in shapes)
        if unexpected:
            raise art.Malformed(f"tensor {unexpected[0]!r} is no weight of a {layers}-layer {backbone_name}")
        weights = {
            name[n:]: torch.from_numpy(np.array(art.require(arrays, name, "float32", shape)))
            for name, shape in shapes.items()
        }
    backbone = backbone_kind(dim, layers, seed)
    if weights:
        backbone.load_state_dict(weights)
    return StoredModel(layer, backbone, backbone_name, dim, layers, seed)


def trainable(
    model: StoredModel,
    train: sp.csr_matrix,
    n_users: int,
    device: torch.device,
    note: Callable[[str], None] | None = None,
):
    """The stored model on ``device`` over the training graph, ready to train or score.

    The layer's own faster model is used where it offers one; everything else
    propagates explicitly, and ``note`` hears why where the faster model did not pay.
    Both compute the same H, gradients and update.
    """
    adjacency = bipartite_adjacency(train)
    fast = model.layer.operator_model(adjacency, n_users, model.backbone, device)
    if fast is not None:
        return fast
    reason = model.layer.propagation_note(adjacency, model.backbone)
    if reason is not None and note is not None:
        note(reason)
    return PropagationModel(model.layer, model.backbone, adjacency, n_users, device)


def node_outputs(
    model: StoredModel, train: sp.csr_matrix, n_users: int, device: torch.device
) -> torch.Tensor:
    """Propagated rows of every node of the layer's graph (entities, then any meta nodes)."""
    with torch.no_grad():
        return trainable(model, train, n_users, device).node_outputs()


def propagated_embeddings(
    model: StoredModel, train: sp.csr_matrix, n_users: int, device: torch.device
) -> torch.Tensor:
    """The propagated rows H of all entities: what scoring uses."""
    with torch.no_grad():
        return trainable(model, train, n_users, device).entity_embeddings()


class PropagationModel:
    """Any layer through any backbone, by explicit propagation over the layer's graph."""

    def __init__(
        self,
        layer: EmbeddingLayer,
        backbone: Backbone,
        adjacency: sp.csr_matrix,
        n_users: int,
        device: torch.device,
    ) -> None:
        self.layer = layer.to(device)
        self.backbone = backbone.to(device)
        self.adjacency = adjacency
        self.n_users = n_users
        self.n_entities = adjacency.shape[0]
        self.device = device
        self._build_graph()

    @property
    def assignment(self) -> sp.csr_matrix | None:
        return self.layer.assignment

    def _build_graph(self) -> None:
        self.graph = graph_tensor(self.backbone, self.layer.graph(self.adjacency), self.device)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.layer.parameters(), *self.backbone.parameters()]

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 rows of every node and the backbone's output rows."""
        x0 = self.layer()
        return x0, self.backbone(self.graph, x0)

    def outputs(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Entity rows of H and the batch's L2 sum over layer-0 rows, weighted by ``counts``."""
        x0, h = self.propagate()
        present = np.flatnonzero(counts)
        rows = torch.from_numpy(present).to(self.device)
        weights = torch.from_numpy(counts[present].astype(np.float32)).to(self.device)
        l2 = (weights * x0.index_select(0, rows).pow(2).sum(1)).sum()
        return h[: self.n_entities], l2

    def row_outputs(self, rows: np.ndarray, counts: np.ndarray) -> None:
        """None: explicit propagation computes every row at once (:meth:`outputs`)."""
        return None

    def entity_rows(self, rows: np.ndarray) -> None:
        """None: explicit propagation computes every row at once (:meth:`entity_embeddings`)."""
        return None

    def entity_embeddings(self) -> torch.Tensor:
        return self.propagate()[1][: self.n_entities]

    def node_outputs(self) -> torch.Tensor:
        """The backbone's output rows of every node of the layer's graph."""
        return self.propagate()[1]

    def set_assignment(self, assignment: sp.csr_matrix) -> None:
        """Install an assignment S solved elsewhere (another process's update) and rebuild the graph."""
        self.layer.set_assignment(assignment)
        self._build_graph()

    def update_assignment(self) -> int:
        """Re-solve the layer's assignment on the backbone's outputs and rebuild the graph."""
        with torch.no_grad():
            h = self.propagate()[1]
        kept = self.layer.update_assignment(h)
        self._build_graph()
        return kept

    def state(self) -> dict[str, torch.Tensor]:
        return joint_state(self.layer, self.backbone)

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        load_split_state(self.layer, self.backbone, state)

    def stored_params(self) -> int:
        return self.layer.stored_params()
