"""Real data at other densities and degrees of community, for checking a default beyond the
two datasets at hand (issue #15's choice of d): a dataset thinned to a share of its
interactions, or cut to its k-core. Reads and writes LightGCN text files (``train.txt``,
``test.txt``), ids renumbered from 0; test items absent from the new train are dropped.

    python bench/derived_data.py thin ../shared/data/ml-1m /tmp/ml-thin20 --keep 0.2
    python bench/derived_data.py core ../shared/data/gowalla /tmp/gw-core15 --k 15

Then ``legcf run RUN --data OUT [--dim 64|128]`` as with any dataset. Prints users, items,
training interactions and interactions an entity.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

Rows = dict[int, list[int]]


def read_rows(path: Path) -> Rows:
    """``user item item ...`` lines as {user: [items]}."""
    rows: Rows = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields:
            rows[int(fields[0])] = [int(f) for f in fields[1:]]
    return rows


def thinned(rows: Rows, keep: float, rng: random.Random) -> Rows:
    """Each interaction kept with probability ``keep``."""
    return {user: [i for i in items if rng.random() < keep] for user, items in rows.items()}


def k_core(rows: Rows, k: int) -> Rows:
    """The largest subgraph where every user and item has at least ``k`` interactions."""
    while True:
        degree = Counter(i for items in rows.values() for i in items)
        kept = {u: [i for i in items if degree[i] >= k] for u, items in rows.items()}
        kept = {u: items for u, items in kept.items() if len(items) >= k}
        if sum(map(len, kept.values())) == sum(map(len, rows.values())):
            return kept
        rows = kept


def write_split(out: Path, train: Rows, test: Rows) -> str:
    """Both files with users and items renumbered from 0; a summary line."""
    users = sorted(u for u, items in train.items() if items)
    items = sorted({i for u in users for i in train[u]})
    user_id = {u: n for n, u in enumerate(users)}
    item_id = {i: n for n, i in enumerate(items)}
    out.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(map(str, [user_id[u], *(item_id[i] for i in train[u])])) for u in users]
    (out / "train.txt").write_text("\n".join(lines) + "\n")
    tested = {u: [item_id[i] for i in test.get(u, []) if i in item_id] for u in users}
    lines = [" ".join(map(str, [user_id[u], *t])) for u, t in tested.items() if t]
    (out / "test.txt").write_text("\n".join(lines) + "\n")
    n = sum(len(train[u]) for u in users)
    per_entity = n / (len(users) + len(items))
    sizes = f"{len(users):,} users, {len(items):,} items, {n:,} training interactions"
    return f"{out}: {sizes}, {per_entity:.1f} an entity"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("how", choices=("thin", "core"))
    parser.add_argument("source", type=Path, help="folder with train.txt and test.txt")
    parser.add_argument("out", type=Path)
    parser.add_argument("--keep", type=float, default=0.2, help="thin: share of interactions kept")
    parser.add_argument("--k", type=int, default=15, help="core: least interactions an entity")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    train, test = read_rows(args.source / "train.txt"), read_rows(args.source / "test.txt")
    if args.how == "thin":
        rng = random.Random(args.seed)
        train, test = thinned(train, args.keep, rng), thinned(test, args.keep, rng)
    else:
        train = k_core(train, args.k)
    print(write_split(args.out, train, test))


if __name__ == "__main__":
    main()
