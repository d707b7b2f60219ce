"""Memory per rank of sharded training (issue #14): a sharded pretrain of RUN at W = 1, 2, 4
ranks, one after another, each launched by torchrun under /usr/bin/time -v.

    python bench/shard_memory.py RUN                        # W = 1, 2, 4; 3 batches an epoch
    python bench/shard_memory.py RUN --ranks 2 --max-batches 0 --epochs 1   # every batch

RUN is a partitioned run directory (prepare and partition done); each launch overwrites its
pretrain results. ``--max-batches`` sets the bench knob ``LEGCF_SHARD_MAX_BATCHES``: each
epoch trains only that many batches, so that the measurement is feasible on a small
machine; building P's rows, which sets the peak, runs in full. Each rank's peak RSS
(``getrusage`` ru_maxrss, which the ranks gather into the manifest as ``rank_peak_rss_mb``)
and the launcher's ``Maximum resident set size`` (the largest single process under it) are
printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def launch(run: Path, ranks: int, args: argparse.Namespace) -> dict:
    """One sharded pretrain at ``ranks`` ranks; its figures."""
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(ranks), "-m", "legcf_cli", "pretrain", str(run), "--shard",
        "--device", "cpu", "--epochs", str(args.epochs), "--eval-users", str(args.eval_users),
        *args.train_options.split(),
    ]  # fmt: skip
    env = {**os.environ, "LEGCF_SHARD_MAX_BATCHES": str(args.max_batches)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
        (args.logs / f"w{ranks}.stderr.txt").write_text(done.stderr)
    if done.returncode != 0:
        sys.exit(f"W = {ranks} failed:\n{done.stderr[-3000:]}")
    launcher_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    entry = json.loads((run / "manifest.json").read_text())["stages"]["pretrain"]
    return {
        "ranks": ranks,
        "seconds": round(seconds, 1),
        "launcher_max_rss_mb": round(launcher_kb / 1024),
        "rank_peak_rss_mb": entry["rank_peak_rss_mb"],
        "rank_rows": entry["rank_rows"],
        "rank_positives": entry["rank_positives"],
    }


def table(results: list[dict]) -> str:
    lines = [
        "| ranks | peak RSS per rank (MB) | largest process (time -v, MB) | rows per rank | seconds |",
        "|---:|---|---:|---|---:|",
    ]
    for r in results:
        peaks = ", ".join(f"{v:,}" for v in r["rank_peak_rss_mb"])
        rows = ", ".join(f"{v:,}" for v in r["rank_rows"])
        lines.append(f"| {r['ranks']} | {peaks} | {r['launcher_max_rss_mb']:,} | {rows} | {r['seconds']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--ranks", default="1,2,4", help="comma-separated W values")
    parser.add_argument("--max-batches", type=int, default=3, help="batches an epoch (0: all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-users", type=int, default=1000)
    parser.add_argument(
        "--train-options", default="", help="more pretrain options, e.g. '--batch-size 16384'"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--logs", type=Path, help="write each launch's stderr here")
    args = parser.parse_args()
    results = []
    for ranks in (int(w) for w in args.ranks.split(",")):
        results.append(launch(args.run, ranks, args))
        print(json.dumps(results[-1]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
