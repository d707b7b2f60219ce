"""Issue #14's scaling table: every stage's wall time and peak RSS on synthetic graphs of
1M to 20M interactions, one stage at a time, each in a fresh process under /usr/bin/time -v.

    python bench/scale.py --root /tmp/scale/bench                        # 1M, 2M, 5M, 10M, 20M
    python bench/scale.py --root /tmp/scale/bench --sizes 1,2 --table    # some sizes; print the table

Users and items grow with the interactions (E/20 users, E/100 items: 20M is issue #14's
1,000,000 users and 200,000 items), so density and degrees stay the same and linear growth
is what to expect. Each size runs ``legcf synth`` (seed 2024), then prepare, partition
(-c 500, t = 2), pretrain, refine (an assignment update after every epoch), evaluate,
export and inspect at d = 128, with validation and test scored on a seeded sample of
``--eval-users`` users. From the manifest it takes one training epoch's BPR steps, one
assignment update and evaluation per 1,000 users, and it scores a popularity ranking
(item training counts) on the same test users for comparison. Results go to
``ROOT/results.json`` (one entry a size, kept across invocations) and the Markdown table,
with the fitted growth exponents (slope of log time and log memory against log
interactions), to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

STAGES = ("prepare", "partition", "pretrain", "refine", "evaluate", "export", "inspect")
SEED = 2024


def stage_commands(run: Path, data: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    """The legcf command line of each stage."""
    sample = ["--eval-users", str(args.eval_users)]
    train = ["--device", "cpu", *sample, *args.train_options.split()]
    refining = [*train, "--solver", args.solver] if args.solver else train
    return {
        "prepare": ["prepare", str(run), "--data", str(data)],
        "partition": ["partition", str(run), "-c", str(args.codebook), "-t", "2"],
        "pretrain": ["pretrain", str(run), "--epochs", str(args.pretrain_epochs), *train],
        "refine": ["refine", str(run), "--epochs", str(args.refine_epochs), "--update-every", "1", *refining],
        "evaluate": ["evaluate", str(run), "--json", "--device", "cpu", *sample],
        "export": ["export", str(run), "--json"],
        "inspect": ["inspect", str(run), "--json"],
    }


def timed(command: list[str], log: Path) -> dict[str, float]:
    """Run ``command`` under /usr/bin/time -v (niced); its wall seconds and peak RSS in MB."""
    report = log.with_suffix(".time")
    with log.open("w") as out:
        code = subprocess.call(
            ["/usr/bin/time", "-v", "-o", str(report), "nice", "-n", "10", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    text = report.read_text()
    if code != 0:
        raise SystemExit(f"error: {' '.join(command)} failed ({code}); see {log}")
    clock = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", text).group(1).split(":")
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(clock)))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return {"seconds": round(seconds, 2), "peak_mb": round(rss / 1024)}


def popularity_ndcg(run: Path, sample: int) -> float:
    """NDCG@20 of ranking items by training count, on the test users evaluate sampled."""
    import torch

    from legcf_core import artifacts as art
    from legcf_core.evaluation import evaluate, popularity_scores, scored_users
    from legcf_core.stages.inputs import load_data

    data = load_data(art.RunDir(run))
    items = torch.from_numpy(popularity_scores(data.train))[:, None]
    users = scored_users(data.test, sample, SEED)
    ones = torch.ones(users.size, 1)
    result = evaluate(ones, items, data.seen_before("test"), data.test, users=users, rows_of_users=True)
    return round(result["ndcg@20"], 6)


def measure(millions: float, args: argparse.Namespace) -> dict:
    """Every stage of one size, and the figures the table needs."""
    interactions = int(millions * 1_000_000)
    tag = f"{millions:g}m"
    data, run, logs = args.root / f"data-{tag}", args.root / f"run-{tag}", args.root / f"logs-{tag}"
    logs.mkdir(parents=True, exist_ok=True)
    legcf = [sys.executable, "-m", "legcf_cli"]
    if not (data / "train.txt").exists():
        sizes = ["--users", str(interactions // 20), "--items", str(interactions // 100)]
        synth = [*legcf, "-q", "synth", str(data), *sizes, "--interactions", str(interactions)]
        timed([*synth, "--seed", str(SEED)], logs / "synth.log")
    subprocess.call(["rm", "-rf", str(run)])
    entry: dict = {"interactions": interactions, "users": interactions // 20, "items": interactions // 100}
    for stage, command in stage_commands(run, data, args).items():
        entry[stage] = timed([*legcf, *command], logs / f"{stage}.log")
        print(f"{tag} {stage}: {entry[stage]}", file=sys.stderr, flush=True)
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    pre, ref = stages["pretrain"]["history"][0], stages["refine"]["history"][0]
    test = next(v for k, v in stages["evaluate"]["results"].items() if k.endswith("/test"))
    entry["epoch_seconds"] = pre["train_seconds"]
    entry["update_seconds"] = ref["update_seconds"]
    entry["solver"] = stages["refine"]["config"]["solver"]
    entry["valid_seconds"] = pre["valid_seconds"]
    entry["eval_seconds_per_1000_users"] = round(1000 * test["seconds"] / test["users"], 3)
    entry["test_ndcg@20"] = test["ndcg@20"]
    entry["popularity_ndcg@20"] = popularity_ndcg(run, args.eval_users)
    entry["eval_users"] = test["users"]
    return entry


def slope(xs: list[float], ys: list[float]) -> float:
    """The exponent b of y ~ x^b fitted by least squares on logs."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def table(results: dict) -> str:
    """The Markdown table of every size measured, and the fitted growth."""
    rows = [results[k] for k in sorted(results, key=lambda k: results[k]["interactions"])]
    head = ["interactions", "users", "items", *(f"{s} s / MB" for s in STAGES)]
    head += ["epoch s", "update s", "eval s / 1k users", "test N@20 (pop.)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        cells = [f"{r['interactions']:,}", f"{r['users']:,}", f"{r['items']:,}"]
        cells += [f"{r[s]['seconds']:.0f} / {r[s]['peak_mb']:,}" for s in STAGES]
        cells += [f"{r['epoch_seconds']:.0f}", f"{r['update_seconds']:.0f}"]
        cells += [f"{r['eval_seconds_per_1000_users']:.2f}"]
        cells += [f"{r['test_ndcg@20']:.4f} ({r['popularity_ndcg@20']:.4f})"]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > 1:
        x = [r["interactions"] for r in rows]
        fits = [
            f"{s}: time {slope(x, [r[s]['seconds'] for r in rows]):.2f}, "
            f"memory {slope(x, [r[s]['peak_mb'] for r in rows]):.2f}"
            for s in STAGES
        ]
        fits.append(f"epoch: {slope(x, [r['epoch_seconds'] for r in rows]):.2f}")
        fits.append(f"update: {slope(x, [r['update_seconds'] for r in rows]):.2f}")
        lines += ["", "Fitted exponents b in cost ~ interactions^b: " + "; ".join(fits) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="Where data, runs and logs go.")
    parser.add_argument("--sizes", default="1,2,5,10,20", help="Millions of interactions, comma-separated.")
    parser.add_argument("--codebook", type=int, default=500)
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    parser.add_argument("--refine-epochs", type=int, default=1)
    parser.add_argument("--eval-users", type=int, default=10_000)
    parser.add_argument("--train-options", default="", help="More pretrain/refine options, e.g. '--lr 0.1'.")
    parser.add_argument("--solver", help="Refine's solver (default: legcf's own).")
    parser.add_argument("--table", action="store_true", help="Only print the table of what was measured.")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    store = args.root / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    if not args.table:
        for size in (float(s) for s in args.sizes.split(",")):
            results[f"{size:g}m"] = measure(size, args)
            temporary = store.with_suffix(".tmp")
            temporary.write_text(json.dumps(results, indent=1))
            os.replace(temporary, store)
    print(table(results))


if __name__ == "__main__":
    main()
