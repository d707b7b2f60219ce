"""What a trained model is made of, and how to turn it back into a model.

A :class:`ModelSpec` is everything an artifact holds about a model: which
embedding table and backbone, their tensors, and the sparse structure (S for
LEGCF, the surviving pattern for a pruned PEP table). Stages write specs,
evaluation and export rebuild models from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.backbones import BACKBONES, make_backbone
from legcf_core.embeddings import (
    EMBEDDINGS,
    CodebookTable,
    FullTable,
    PEPTable,
    QRTable,
    SparseTable,
)
from legcf_core.errors import ArtifactError, ConfigError
from legcf_core.graph import bipartite_adjacency
from legcf_core.inspection import embedding_bytes, embedding_params
from legcf_core.model import CodebookModel, GraphModel

BACKBONE_PREFIX = "backbone."
SIZING_FIELDS = ("budget", "remainders", "quotients")  # how a QR or PEP table was sized


def check_choice(embedding: str, backbone: str) -> None:
    if embedding not in EMBEDDINGS:
        raise ConfigError(f"unknown --embedding {embedding!r}; expected one of {', '.join(EMBEDDINGS)}")
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown --backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")


@dataclass
class ModelSpec:
    """A trained model as stored: tensors by name plus its sparse structure."""

    embedding: str
    backbone: str
    dim: int
    layers: int
    tensors: dict[str, torch.Tensor]
    assignment: sp.csr_matrix | None = None  # LEGCF's S
    pattern: sp.csr_matrix | None = None  # a pruned PEP table's nonzero pattern
    per_entity: int = 0
    seed: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def codebook(self) -> torch.Tensor:
        return self.tensors["codebook"]

    def params(self) -> int:
        """Numbers the embedding layer stores; backbone weights are not counted, as in the paper."""
        if self.embedding == "legcf":
            return embedding_params(tuple(self.codebook.shape), self.assignment)
        if self.embedding == "pep":
            return int(self.pattern.nnz)
        return int(sum(v.numel() for k, v in self.tensors.items() if not k.startswith(BACKBONE_PREFIX)))

    def bytes(self) -> int:
        """Bytes of the embedding layer: float32 values, sparse parts as CSR (int64 indptr, int32 indices)."""
        if self.embedding == "legcf":
            return embedding_bytes(tuple(self.codebook.shape), self.assignment)
        if self.embedding == "pep":
            return int(8 * (self.pattern.shape[0] + 1) + 8 * self.pattern.nnz)
        return 4 * self.params()

    def header(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "embedding": self.embedding,
            "backbone": self.backbone,
            "dim": self.dim,
            "layers": self.layers,
            "seed": self.seed,
            **self.extra,
        }
        if self.embedding == "legcf":
            fields.update(codebook_size=self.codebook.shape[0], per_entity=self.per_entity)
        return fields

    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors to write: dense tensors by name, S or the pattern as CSR arrays."""
        arrays = {name: value.numpy() for name, value in self.tensors.items()}
        if self.assignment is not None:
            arrays.update(art.csr_arrays("assignment", self.assignment))
        if self.pattern is not None:
            arrays.update(art.csr_arrays("pattern", self.pattern, with_data=False))
        return arrays


def spec_from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, str], path: object) -> ModelSpec:
    """Inverse of :meth:`ModelSpec.arrays` with the header; legcf 0.1 files lack the
    embedding and backbone fields and are LEGCF on LightGCN."""
    embedding = meta.get("embedding", "legcf")
    backbone = meta.get("backbone", "lightgcn")
    try:
        check_choice(embedding, backbone)
    except ConfigError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    sparse_prefixes = ("assignment.", "pattern.", "train.")
    tensors = {
        name: torch.from_numpy(value.copy())
        for name, value in arrays.items()
        if not name.startswith(sparse_prefixes) and name not in ("user_ids", "item_ids", "parts")
    }
    assignment = pattern = None
    if embedding == "legcf":
        assignment = art.csr_from_arrays("assignment", arrays).astype(np.float32)
    if embedding == "pep":
        pattern = art.csr_from_arrays("pattern", arrays).astype(np.float32)
    return ModelSpec(
        embedding,
        backbone,
        int(meta["dim"]),
        int(meta["layers"]),
        tensors,
        assignment,
        pattern,
        int(meta.get("per_entity", 0)),
        int(meta.get("seed", 0)),
        {k: v for k, v in meta.items() if k in SIZING_FIELDS},
    )


OPERATOR_COST_RATIO = 32
"""How many sparse multiply-adds over A' cost as much as one dense one (2-core CPU, docs/design.md)."""


def operator_pays(n_entities: int, codebook_size: int, layers: int, expanded_nnz: int) -> bool:
    """Whether the dense (N+c) x c operator P beats L sparse passes over A' per training step.

    P's product grows with c, explicit propagation does not: on Gowalla P wins
    at c = 500 and loses from c of about 2,500 on (and costs 4(N+c)c bytes).
    """
    dense = (n_entities + codebook_size) * codebook_size
    return dense <= OPERATOR_COST_RATIO * layers * expanded_nnz


def build_model(
    spec: ModelSpec, train: sp.csr_matrix, n_users: int, device: torch.device
) -> CodebookModel | GraphModel:
    """A trainable model holding the spec's tensors.

    LEGCF on LightGCN uses the linear operator P while P is the cheaper path
    (:func:`operator_pays`); everything else propagates explicitly. Both paths
    compute the same H, gradients and assignment update.
    """
    adjacency = bipartite_adjacency(train)
    if (
        spec.embedding == "legcf"
        and spec.backbone == "lightgcn"
        and operator_pays(
            adjacency.shape[0], spec.codebook.shape[0], spec.layers, adjacency.nnz + 2 * spec.assignment.nnz
        )
    ):
        return CodebookModel(
            adjacency, n_users, spec.assignment, spec.codebook, spec.per_entity, spec.layers, device
        )
    n_entities = adjacency.shape[0]
    tensors = spec.tensors
    if spec.embedding == "legcf":
        table: torch.nn.Module = CodebookTable(tensors["codebook"], spec.assignment)
    elif spec.embedding == "full":
        table = FullTable(tensors["weight"])
    elif spec.embedding == "qr":
        table = QRTable(tensors["quotient"], tensors["remainder"], n_entities)
    elif spec.pattern is not None:
        table = SparseTable(spec.pattern, tensors["values"])
    else:
        table = PEPTable(tensors["weight"], tensors["threshold"])
    backbone = make_backbone(spec.backbone, spec.dim, spec.layers, spec.seed)
    weights = {k[len(BACKBONE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(BACKBONE_PREFIX)}
    if weights:
        backbone.load_state_dict(weights)
    return GraphModel(table, backbone, adjacency, n_users, device, spec.per_entity)


def with_state(
    spec: ModelSpec, state: dict[str, torch.Tensor], assignment: sp.csr_matrix | None
) -> ModelSpec:
    """The spec with a trained model's state (and, for LEGCF, its current S)."""
    return ModelSpec(
        spec.embedding,
        spec.backbone,
        spec.dim,
        spec.layers,
        dict(state),
        assignment if assignment is not None else spec.assignment,
        spec.pattern,
        spec.per_entity,
        spec.seed,
        dict(spec.extra),
    )
