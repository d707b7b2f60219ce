"""legcf's engine: LEGCF's compact embeddings for graph recommenders, and what it is compared to.

``legcf_core.load(path)`` opens an exported model file (or a run directory) as a
:class:`~legcf_core.recommender.Recommender`::

    model = legcf_core.load("runs/demo/model.safetensors")
    items, scores = model.recommend([user_id], k=20)

Importing this package loads neither torch nor scipy; the CLI relies on that
to start at once.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from legcf_core.recommender import Recommender

try:
    __version__ = metadata.version("legcf")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def load(path: str | Path, device: str = "cpu") -> Recommender:
    """A trained model ready to recommend, from a file ``legcf export`` wrote (exact or
    ``--compact``) or a run directory (its refined model if up to date, else its pretrained one)."""
    from legcf_core.artifacts import RunDir, read_metadata
    from legcf_core.model import propagated_embeddings
    from legcf_core.recommender import Recommender
    from legcf_core.runtime import resolve_device
    from legcf_core.stages.export import load_export
    from legcf_core.stages.export_compact import load_compact
    from legcf_core.stages.inputs import load_data, load_model

    target, where = Path(path), resolve_device(device)
    if not target.is_dir():
        if read_metadata(target).get("kind") == "compact":
            return load_compact(target, where)
        return load_export(target).recommender(where)
    run = RunDir(target)
    data = load_data(run)
    h = propagated_embeddings(load_model(run, "auto", data.n_entities).model, data.train, data.n_users, where)
    seen = data.seen_before("test")  # all a user had before test (train-fraction adds validation)
    return Recommender(h[: data.n_users], h[data.n_users :], seen, data.user_ids, data.item_ids)
