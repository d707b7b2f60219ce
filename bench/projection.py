"""Issue #14's projection: memory and time per rank of sharded training at a size not run here
(100M entities and 10B interactions by default), from per-row and per-step costs measured on
the synthetic 20M graph.

    python bench/projection.py                                   # 100M entities, 10B interactions
    python bench/projection.py --entities 2e7 --interactions 1e9 --ranks 4,8 --gbps 25

What it assumes, and where each figure was measured (docs/scaling.md, "Projection"):

- Memory per sharded rank = FIXED + ENTITY_BYTES * N + (owned rows) * (P_BYTES_PER_CODE * c
  + NONZERO_BYTES * nonzeros of A a row). A line through the workers' peaks of
  ``bench/shard_memory.py`` on the 20M graph at W = 2 and 4 gives 4,899 bytes an owned row at
  c = 500 and 27.4 nonzeros a row: 4,000 of them P's two float32 build buffers, the rest
  33 bytes a nonzero (A's rows and the sampler's positives). Its intercept, 1.03 GB, is the
  runtime and allocator, plus 25 bytes an entity of index arrays over all N.
- Compute per step scales with the batch's distinct rows R over W ranks: the 20M graph's clean
  epoch took 409.9 s for 1,005 steps of 16,384 positives (5 negatives) at R = 92,406
  (``bench/scale.py``, one process on 2 cores).
- Communication per step, as built: a ring all-reduce of the batch's R rows of H and of the
  codebook gradient, and an all-gather of the batch. "all-to-all" is the change
  docs/scaling.md names but legcf does not have: each rank receives only the rows of its own
  triplets and sends their gradients back.
- P's build: every boundary row (85% of rows on the 20M graph at W = 2) broadcast to every rank,
  c float32 a row, once a layer.
"""

from __future__ import annotations

import argparse

FIXED_BYTES = 1.0325 * 2**30 - 25 * 1.2e6  # the fit's intercept less its 1.2M entities' arrays
ENTITY_BYTES = 25  # owner, boundary place, needed flag (int32) and degree (float64), every rank
P_BYTES_PER_CODE = 8  # two float32 build buffers a code column
NONZERO_BYTES = (4898.5 - 4000) / 27.42  # the rest of the measured per-row cost, per nonzero
STEP_SECONDS = 409.9 / 1005  # one step of 16,384 positives on the 20M graph, 2 cores
STEP_ROWS = 92_406  # distinct entities a batch there
BOUNDARY_SHARE = 0.85  # rows with a neighbour on another rank, 20M graph, W = 2
TRAIN_SHARE = 16_454_780 / 20_000_000  # training interactions of all, legcf synth's split
HELD_OUT_BYTES = 0.2e9 / (20_000_000 - 16_454_780)  # rank 0's splits, a held-out interaction


def project(args: argparse.Namespace, ranks: int) -> dict[str, float]:
    """Memory (bytes) and hours of one epoch per rank at ``ranks`` ranks."""
    train = args.interactions * TRAIN_SHARE
    steps = train / args.batch
    rows_per_batch = min(args.entities, args.batch_rows)
    per_row = P_BYTES_PER_CODE * args.codebook + NONZERO_BYTES * 2 * train / args.entities
    memory = FIXED_BYTES + ENTITY_BYTES * args.entities + per_row * args.entities / ranks
    ring = 2 * (ranks - 1) / ranks
    gradient = (args.codebook * args.dim + 2) * 4 * ring
    batch = args.batch * (2 + args.negatives) * 8
    as_built = steps * (rows_per_batch * args.dim * 4 * ring + gradient + batch)
    own_rows = min(rows_per_batch, args.batch / ranks * (2 + args.negatives))
    all_to_all = steps * (2 * own_rows * args.dim * 4 + gradient + batch)
    bandwidth = args.gbps * 1e9 / 8
    return {
        "memory": memory,
        "rank0_extra": args.entities * (args.per_entity * 12 + 8)
        + (args.interactions - train) * HELD_OUT_BYTES,
        "compute_h": steps * STEP_SECONDS * (rows_per_batch / STEP_ROWS) / ranks / 3600,
        "as_built_tb": as_built / 1e12,
        "as_built_h": as_built / bandwidth / 3600,
        "all_to_all_tb": all_to_all / 1e12,
        "all_to_all_h": all_to_all / bandwidth / 3600,
        "build_min": args.layers * BOUNDARY_SHARE * args.entities * args.codebook * 4 / bandwidth / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=float, default=1e8, help="Users and items, N.")
    parser.add_argument("--interactions", type=float, default=1e10)
    parser.add_argument("--ranks", default="16,32,64,128,256", help="Ranks (2-core machines), W.")
    parser.add_argument("--gbps", type=float, default=10.0, help="Network bandwidth per rank, Gbit/s.")
    parser.add_argument("--codebook", type=int, default=500, help="c")
    parser.add_argument("--dim", type=int, default=128, help="d")
    parser.add_argument("--per-entity", type=int, default=2, help="t")
    parser.add_argument("--layers", type=int, default=3, help="L")
    parser.add_argument("--batch", type=int, default=16_384, help="Positives a step, all ranks.")
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--batch-rows", type=float, default=110_000, help="Distinct rows a batch, R.")
    args = parser.parse_args()
    print(
        f"N = {args.entities:,.0f}, E = {args.interactions:,.0f}, c = {args.codebook}, d = {args.dim}, "
        f"batch {args.batch:,}, R = {args.batch_rows:,.0f}, {args.gbps:g} Gbit/s"
    )
    print("| ranks | memory per rank | compute h/epoch | as built: TB, h | all-to-all: TB, h | P build |")
    print("|---:|---:|---:|---:|---:|---:|")
    for ranks in (int(w) for w in args.ranks.split(",")):
        p = project(args, ranks)
        print(
            f"| {ranks} | {p['memory'] / 1e9:.1f} GB | {p['compute_h']:.2f} | "
            f"{p['as_built_tb']:.1f}, {p['as_built_h']:.1f} | "
            f"{p['all_to_all_tb']:.2f}, {p['all_to_all_h']:.2f} | {p['build_min']:.1f} min |"
        )
    print(f"rank 0 holds {p['rank0_extra'] / 1e9:.1f} GB more: all of S and the held-out splits")


if __name__ == "__main__":
    main()
