"""Time and size legcf's serving paths on a finished run directory.

    python bench/serving.py runs/gowalla --json

Exports the exact model and the compact form (float32, float16, without seen
items), then for each prints its file size, the time to load it, top-20 for
one user and for 1,000 users, one fold-in, and its test NDCG@20 / Recall@20
(full ranking, as ``legcf evaluate``). First it checks parity: the exact
export's top-20 for 1,000 sampled users must equal the run directory's, same
items in the same order. A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import legcf_core
from legcf_core.artifacts import RunDir
from legcf_core.evaluation import evaluate
from legcf_core.runtime import keep_freed_memory
from legcf_core.stages import export, load_data
from legcf_core.stages.export_compact import export_compact


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(path: Path, data, users: np.ndarray) -> dict:
    load_s = best_of(3, lambda: legcf_core.load(path))
    served = legcf_core.load(path)
    one = best_of(20, lambda: served.recommend(users[:1], k=20))
    many = best_of(3, lambda: served.recommend(users, k=20))
    items = list(data.item_ids[data.train[int(np.argmax(np.diff(data.train.indptr)) // 2)].indices[:20]])
    fold = best_of(20, lambda: served.recommend_for_items(items, k=20))
    with torch.no_grad():
        metrics = evaluate(served.user_rows, served.item_rows, data.train, data.test)
    return {
        "bytes": path.stat().st_size,
        "load_s": round(load_s, 4),
        "top20_one_user_ms": round(1000 * one, 2),
        "top20_1000_users_s": round(many, 3),
        "fold_in_ms": round(1000 * fold, 2),
        "test_ndcg@20": round(metrics["ndcg@20"], 4),
        "test_recall@20": round(metrics["recall@20"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    keep_freed_memory()
    run = RunDir(args.run)
    data = load_data(run)
    users = data.user_ids[
        np.random.default_rng(0).choice(data.n_users, min(1000, data.n_users), replace=False)
    ]
    out = Path(tempfile.mkdtemp(prefix="legcf-serving-"))
    forms = {"exact": Path(export(run, out / "exact.safetensors")["path"])}
    for name, dtype, seen in (
        ("compact", "float32", True),
        ("compact-f16", "float16", True),
        ("compact-noseen", "float32", False),
    ):
        forms[name] = Path(
            export_compact(run, out / f"{name}.safetensors", dtype=dtype, keep_seen=seen)["path"]
        )
    from_run, from_export = legcf_core.load(run.path), legcf_core.load(forms["exact"])
    same = from_run.recommend(users, k=20)[0] == from_export.recommend(users, k=20)[0]
    parity = {"users": int(users.size), "same_top20_in_order": int(same.all(axis=1).sum())}
    results = {"parity": parity, **{name: measure(path, data, users) for name, path in forms.items()}}
    if args.json:
        print(json.dumps(results))
    else:
        for name, values in results.items():
            print(name, "  ".join(f"{k} {v}" for k, v in values.items()))


if __name__ == "__main__":
    main()
