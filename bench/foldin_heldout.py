"""Fold-in against training: hold out a share of users, train without them, fold them in,
and compare their test NDCG@20 with the same users in a model trained with them, and with
popularity.

    python bench/foldin_heldout.py ../shared/data/gowalla runs/gowalla --share 0.1 --work /tmp/foldin

DATA is a LightGCN-format directory (train.txt, test.txt); FULL_RUN a finished run on the
whole of it (the "trained with them" model). Truth is each held-out user's test.txt items;
ranking is over all items, their training items left out, for all three models alike.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import legcf_core


def read_lines(path: Path) -> dict[int, list[int]]:
    rows = {}
    for line in path.read_text().splitlines():
        parts = [int(x) for x in line.split()]
        if parts:
            rows[parts[0]] = parts[1:]
    return rows


def ndcg_at(top: list[int], truth: set[int], k: int = 20) -> float:
    gains = sum(1.0 / np.log2(rank + 2) for rank, item in enumerate(top[:k]) if item in truth)
    ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(k, len(truth))))
    return gains / ideal


def legcf(*args: str) -> None:
    subprocess.run(
        [str(Path(sys.executable).parent / "legcf"), "-q", *args], check=True, stdout=subprocess.DEVNULL
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("full_run", type=Path)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/legcf-foldin"))
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    train, test = read_lines(args.data / "train.txt"), read_lines(args.data / "test.txt")
    rng = np.random.default_rng(args.seed)
    users = np.array(sorted(train))
    held = set(rng.choice(users, int(args.share * users.size), replace=False).tolist())
    data = args.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.txt", train), ("test.txt", test)):
        kept = [" ".join(map(str, [u, *items])) for u, items in rows.items() if u not in held]
        (data / name).write_text("\n".join(kept) + "\n")
    run = args.work / "run"
    if not (run / "model.compact.safetensors").exists():
        legcf("run", str(run), "--data", str(data))
        legcf("export", str(run), "--compact")
    pairs = args.work / "held.csv"
    known_items = set(legcf_core.load(run / "model.compact.safetensors").item_ids.tolist())
    lines = [f"{u},{i}" for u in sorted(held) for i in train[u] if i in known_items]
    pairs.write_text("user,item\n" + "\n".join(lines) + "\n")
    folded_path = args.work / "folded.safetensors"
    legcf("fold-in", str(run / "model.compact.safetensors"), str(pairs), "-o", str(folded_path))
    folded, full = legcf_core.load(folded_path), legcf_core.load(args.full_run)
    degree: dict[int, int] = {}
    for items in train.values():
        for item in items:
            degree[item] = degree.get(item, 0) + 1
    popular = sorted(degree, key=lambda i: -degree[i])
    scores = {"folded-in": [], "trained with them": [], "popularity": []}
    placed = set(folded.user_ids.tolist())
    for user in sorted(held):
        truth = set(test.get(user, [])) - set(train[user])
        if not truth or user not in placed:
            continue
        scores["folded-in"].append(ndcg_at(folded.recommend([user], k=20)[0][0].tolist(), truth))
        scores["trained with them"].append(ndcg_at(full.recommend([user], k=20)[0][0].tolist(), truth))
        seen = set(train[user])
        scores["popularity"].append(ndcg_at([i for i in popular if i not in seen][:20], truth))
    result = {name: round(float(np.mean(v)), 4) for name, v in scores.items()}
    result.update(users=len(scores["folded-in"]), held_out=len(held))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
