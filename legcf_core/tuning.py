"""Every tuned training value, per embedding layer and backbone, with where it came from.

The CLI and ``legcf compare`` read their defaults from :func:`tuned`; nothing
else holds a tuned number. A setting not given on the command line takes the
most specific row: (layer, backbone), then (any layer, backbone). Changing a
value here makes ``compare``'s earlier runs of that configuration stale.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuned:
    """Training defaults for one layer on one backbone."""

    lr: float
    batch_size: int
    pretrain_epochs: int = 100
    refine_epochs: int = 30
    source: str = ""  # the sweep and commit that chose these values


ANY = "*"

TABLE: dict[tuple[str, str], Tuned] = {
    (ANY, "lightgcn"): Tuned(
        0.05, 65536, source="Gowalla validation, lr and l2 grid at batch 65,536 (6222525)"
    ),
    (ANY, "ngcf"): Tuned(
        0.005,
        65536,
        30,
        10,
        source="lr 0.05 diverged on Gowalla (loss 4e5 in the first epochs), 0.005 trains stably (f2f2d37); "
        "epochs capped so a configuration finishes in 30 minutes on 2 cores, ~25 s an epoch (7a35621)",
    ),
    (ANY, "lrgccf"): Tuned(
        0.005, 65536, 30, 10, source="as NGCF: 0.05 diverged (loss 97), capped like NGCF (f2f2d37)"
    ),
    ("legcf", "lightgcn"): Tuned(
        0.1,
        16384,
        source="batch 16,384 beat 65,536 on validation, refine 0.0854 against 0.0837 (4260d78); "
        "lr 0.1 beat 0.02-0.2 with l2 3e-4, refine's valid NDCG@20 0.0885 against 0.0854 at 0.05 "
        "(H200 sweep, docs/measurements/h200-lr-l2-and-sweeps.jsonl, 733461f)",
    ),
    (ANY, "lightgcn-mix"): Tuned(
        0.05, 65536, source="LightGCN's (the layer weights train at a tenth of lr, backbones.MIX_LR_SCALE)"
    ),
    ("legcf", "lightgcn-mix"): Tuned(
        0.1, 16384, source="LEGCF on LightGCN's: ml-1m's validation held at lr 0.1 with the weights at 0.01"
    ),
    ("full", "lightgcn"): Tuned(
        0.05, 16384, source="batch 16,384 beat 65,536 on validation, NDCG@20 0.1073 against 0.1045 (70a2e92)"
    ),
}


def tuned(embedding: str, backbone: str) -> Tuned:
    """The tuned defaults of ``embedding`` on ``backbone``."""
    found = TABLE.get((embedding, backbone)) or TABLE.get((ANY, backbone))
    return found if found is not None else TABLE[(ANY, "lightgcn")]
