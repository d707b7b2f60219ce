"""Export: one self-contained model file (layer, backbone weights, the graph and ids to score with),
and reading it back.

Since format version 2 every index array is stored in as few bits as it needs
(:mod:`legcf_core.packing`): on Gowalla the file falls from 6.0 MB to 2.7 MB
with the same scores. Version 1 files are still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.data import Interactions
from legcf_core.model import StoredModel, propagated_embeddings, stored_model_from_arrays
from legcf_core.recommender import Recommender
from legcf_core.stages.inputs import load_data, load_model
from legcf_core.tokens import id_arrays, read_ids

CPU = torch.device("cpu")


def export(run: art.RunDir, output: Path | None = None, which: str = "auto") -> dict[str, Any]:
    """Write ``model.safetensors`` (or ``output``); record its checksum in the manifest."""
    with run.writing("export"):
        data = load_data(run)
        chosen = load_model(run, which, data.n_entities)
        model = chosen.model
        output = Path(output) if output is not None else run.file(art.EXPORT_FILE)
        meta = art.header(
            "export",
            dataset=run.load_manifest()["dataset"]["fingerprint"],
            n_users=data.n_users,
            n_items=data.n_items,
            params=model.stored_params(),
            made_by=chosen.trained_by,
            **model.header(),
        )
        tensors = art.narrowed(
            {
                **model.arrays(export=True),
                **art.csr_arrays("train", data.train, with_data=False),
                **known_arrays(data),
            }
        )
        tensors.update(id_arrays("user_ids", data.user_ids, narrow=True))
        tensors.update(id_arrays("item_ids", data.item_ids, narrow=True))
        digest = art.write_tensors(output, tensors, meta)
        result = {
            "path": str(output),
            "bytes": output.stat().st_size,
            "params": model.stored_params(),
            "backbone_params": model.backbone_params(),
            "embedding_bytes": model.stored_bytes(),
            "embedding": model.embedding,
            "backbone": model.backbone_name,
            "model": chosen.source,
        }
        run.record(
            "export",
            {
                "inputs": run.inputs(art.DATA_FILE),
                "outputs": {},
                "file": str(output),
                "sha256": digest,
                "metrics": result,
            },
        )
        return result


def known_arrays(data: Interactions) -> dict[str, np.ndarray]:
    """Interactions known before test that are not in the graph (``--validation
    train-fraction`` carves validation from training): recommendations leave them out too."""
    seen = data.seen_before("test")
    if seen is data.train:
        return {}
    return art.csr_arrays("known", data.valid, with_data=False)


@dataclass
class ExportedModel:
    """A model read back from ``legcf export``: enough to score every user."""

    model: StoredModel
    train: sp.csr_matrix
    n_users: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    trained_by: str
    known: sp.csr_matrix | None = None  # interactions left out of recommendations beside train

    def seen(self) -> sp.csr_matrix:
        """What recommendations leave out: the training graph and any other known interactions."""
        if self.known is None:
            return self.train
        seen = (self.train + self.known).tocsr()
        seen.data[:] = 1.0
        return seen

    def embeddings(self, device: torch.device = CPU) -> torch.Tensor:
        return propagated_embeddings(self.model, self.train, self.n_users, device)

    def recommender(self, device: torch.device = CPU) -> Recommender:
        h = self.embeddings(device)
        return Recommender(h[: self.n_users], h[self.n_users :], self.seen(), self.user_ids, self.item_ids)


def load_export(path: Path) -> ExportedModel:
    """An exported model, every array and header field checked before use."""
    path = Path(path)
    tensors, meta = art.read_tensors(path, kind="export")
    with art.checked(path):
        n_users, n_items = art.header_int(meta, "n_users", 1), art.header_int(meta, "n_items", 1)
        train = art.csr_from_arrays("train", tensors, (n_users, n_items), with_data=False)
        user_ids = read_ids(tensors, "user_ids", n_users)
        item_ids = read_ids(tensors, "item_ids", n_items)
        made_by = art.header_choice(meta, "made_by", ("pretrain", "refine"))
        known = None
        if any(name.startswith("known.") for name in tensors):
            known = art.csr_from_arrays("known", tensors, (n_users, n_items), with_data=False)
    model = stored_model_from_arrays(tensors, meta, path, n_users + n_items)
    return ExportedModel(model, train.astype(np.float32), n_users, user_ids, item_ids, made_by, known)
