"""Time legcf's hot paths on a dataset: a training epoch, an assignment update
(the solve + graph and operator rebuild, by each solver; ``update_s`` is the
default's), full-ranking evaluation and top-20 recommendations for 1,000 users;
for LEGCF also the starts: METIS and S0 (``--others neighbor``), and the spectral rows
with their coding.

    python bench/hotpaths.py ../shared/data/gowalla --json
    python bench/hotpaths.py ../shared/data/gowalla --embedding full --backbone ngcf --json

prints {"epoch_s": ..., "update_s": ..., "eval_s": ..., "recommend_1000_users_s": ...,
"peak_rss_mb": ...} (``update_s`` only for layers with an assignment). LEGCF on
LightGCN times the linear-operator path while P is the cheaper one (``model``
says which ran: OperatorModel or PropagationModel); any other
embedding or backbone times explicit propagation. A benchmark, not a test:
numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from legcf_core.config import SOLVERS, RefineConfig
from legcf_core.data import load_dataset
from legcf_core.evaluation import evaluate
from legcf_core.graph import bipartite_adjacency
from legcf_core.layers import LayerSize
from legcf_core.layers.codebook import legcf_params
from legcf_core.model import StoredModel, new_backbone, trainable
from legcf_core.partition import initial_assignment, metis_partition
from legcf_core.recommender import Recommender
from legcf_core.registry import layer_type, resolve_backbone
from legcf_core.runtime import keep_freed_memory, resolve_device
from legcf_core.spectral import spectral_rows
from legcf_core.table_coding import code_table
from legcf_core.training import NegativeSampler, TrainConfig, train_epoch
from legcf_core.tuning import tuned


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn) -> tuple[float, object]:
    sync(device)
    started = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--codebook-size", type=int, default=500)
    parser.add_argument("--per-entity", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="default: what the layer trains with")
    parser.add_argument("--embedding", default="legcf", help="legcf, full, qr or pep")
    parser.add_argument("--backbone", default="auto", help="auto (the layer's default) or a backbone name")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each path; the fastest is reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.backbone = resolve_backbone(args.backbone, args.embedding)

    keep_freed_memory()
    device = resolve_device(args.device)
    data = load_dataset(args.data)
    adjacency = bipartite_adjacency(data.train)
    metis_s, parts = timed(device, lambda: metis_partition(adjacency, args.codebook_size, 2024))
    s0_s, assignment = timed(
        device,
        lambda: initial_assignment(parts.parts, args.codebook_size, args.per_entity, 0.5, 2024, adjacency),
    )
    batch_size = args.batch_size or tuned(args.embedding, args.backbone).batch_size
    config = TrainConfig(batch_size=batch_size, lr=tuned(args.embedding, args.backbone).lr)
    kind = layer_type(args.embedding)
    starts = {}
    if kind.uses_partition:
        svd_s, rows = timed(device, lambda: spectral_rows(data.train, args.dim, 2024))
        table = torch.from_numpy(rows)
        coding_s, _ = timed(device, lambda: code_table(table, args.codebook_size, args.per_entity, seed=2024))
        starts = {"spectral_svd_s": round(svd_s, 3), "spectral_coding_s": round(coding_s, 3)}
    size = LayerSize(
        data.n_entities,
        args.dim,
        2024,
        budget=legcf_params(data.n_entities, args.dim, args.codebook_size, args.per_entity),
        assignment=assignment if kind.uses_partition else None,
        per_entity=args.per_entity,
    )
    backbone = new_backbone(args.backbone, args.dim, args.layers, 2024)
    stored = StoredModel(kind.create(size), backbone, args.backbone, args.dim, args.layers, 2024)
    model = trainable(stored, data.train, data.n_users, device)
    sampler = NegativeSampler(data.train, config.negatives, 2024)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def eval_all() -> dict:
        with torch.no_grad():
            h = model.entity_embeddings()
            return evaluate(h[: data.n_users], h[data.n_users :], data.train, data.test)

    epoch_s = min(
        timed(device, lambda: train_epoch(model, sampler, optimizer, config))[0] for _ in range(args.repeat)
    )
    update_s, update_by_solver = None, {}
    if kind.updates_assignment:
        for solver in sorted(SOLVERS, key=lambda name: name == RefineConfig.solver):  # default last
            model.layer.solver = solver
            runs = [timed(device, model.update_assignment)[0] for _ in range(args.repeat)]
            update_by_solver[solver] = round(min(runs), 3)
        update_s = update_by_solver[RefineConfig.solver]
    eval_s = min(timed(device, eval_all)[0] for _ in range(args.repeat))

    def recommend_1000() -> object:
        with torch.no_grad():
            h = model.entity_embeddings()
        users = data.user_ids[: min(1000, data.n_users)]
        served = Recommender(h[: data.n_users], h[data.n_users :], data.train, data.user_ids, data.item_ids)
        return served.recommend(users, k=20)

    recommend_s = min(timed(device, recommend_1000)[0] for _ in range(args.repeat))
    result = {
        "epoch_s": round(epoch_s, 3),
        "update_s": update_s,
        "update_s_by_solver": update_by_solver,
        "eval_s": round(eval_s, 3),
        "recommend_1000_users_s": round(recommend_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "metis_s": round(metis_s, 3),
        "initial_assignment_s": round(s0_s, 3),  # S0 with --others neighbor, the default
        **starts,
        "positives": int(data.train.nnz),
        "users": data.n_users,
        "items": data.n_items,
        "batch_size": batch_size,
        "embedding": args.embedding,
        "backbone": args.backbone,
        "params": model.stored_params(),
        "model": type(model).__name__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
