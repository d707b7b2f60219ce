"""Evaluate: Recall, NDCG, Precision, HitRate and MRR at K of a run's model, full ranking."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from legcf_core import artifacts as art
from legcf_core.config import DEFAULT_KS, check_int, check_seed, check_split
from legcf_core.errors import ConfigError, DataError
from legcf_core.evaluation import evaluate, scored_users
from legcf_core.model import propagated_embeddings
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.stages.inputs import load_data, load_model
from legcf_core.stages.record import rounded

CPU = torch.device("cpu")


def evaluate_run(
    run: art.RunDir,
    split: str = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
    which: str = "auto",
    device: torch.device = CPU,
    reporter: Reporter | None = None,
    per_user_path: Path | None = None,
    sample: int | None = None,
    seed: int = 2024,
) -> dict[str, Any]:
    """Score ``which`` model on ``split``; every result is kept in the manifest by model and split.
    ``per_user_path``: also write each scored user's metrics there (CSV, the dataset's own ids).
    ``sample``: score a sample of that many users drawn with ``seed`` (``--eval-users``)."""
    reporter = reporter or SilentReporter()
    check_request(split, ks, sample, seed)
    with run.writing("evaluate"):
        data = load_data(run)
        chosen = load_model(run, which, data.n_entities, reporter)
        if split == "valid" and data.validation == "none":
            raise DataError(
                f"{run.path} was prepared with --validation none and has no validation split; "
                "evaluate --split test, or prepare again with --validation test-third or train-fraction"
            )
        started = time.perf_counter()
        per_user: dict[str, np.ndarray] | None = {} if per_user_path is not None else None
        h = propagated_embeddings(chosen.model, data.train, data.n_users, device)
        truth = data.split(split)
        everyone = held_out_users(truth, split, run)
        users = scored_users(truth, sample, seed)
        task = reporter.task(f"evaluating {split}", users.size)
        metrics = evaluate(
            h[: data.n_users],
            h[data.n_users :],
            data.seen_before(split),
            truth,
            ks,
            on_block=lambda n: task.advance(n),
            per_user=per_user,
            users=users,
        )
        task.close()
        result = {
            "split": split,
            "validation": data.validation,
            "model": chosen.source,
            "trained_by": chosen.trained_by,
            **rounded(metrics),
            **sampled(users.size, everyone.size, seed, reporter),
            "seconds": round(time.perf_counter() - started, 3),
        }
        if per_user is not None:
            art.write_bytes_atomic(Path(per_user_path), per_user_csv(per_user, data.user_ids))
            result["per_user_file"] = str(per_user_path)
        evaluations = dict(run.load_manifest()["stages"].get("evaluate", {}).get("results", {}))
        inputs = run.inputs(art.STAGE_FILES[chosen.source])
        evaluations[f"{chosen.source}/{split}"] = {**result, "inputs": inputs}
        run.record("evaluate", {"results": evaluations, "inputs": {}, "outputs": {}})
        return result


def check_request(split: str, ks: tuple[int, ...], sample: int | None, seed: int) -> None:
    """What needs no data: a known split, cut-offs >= 1, a sample of >= 1 user, the seed's range."""
    check_split(split)
    if not ks or min(ks) < 1:
        raise ConfigError("k", f"must be >= 1 for every cut-off, got {list(ks)}")
    if sample is not None:
        check_int("eval_users", sample, 1)
    check_seed(seed)


def held_out_users(truth: Any, split: str, run: art.RunDir) -> np.ndarray:
    """Every user with a held-out item in ``split``; an empty split is refused."""
    everyone = scored_users(truth)
    if everyone.size == 0:
        raise DataError(
            f"the {split} split of {run.path} is empty: no user has a held-out item to rank; "
            "prepare the data again with this legcf (it refuses empty splits)"
        )
    return everyone


def sampled(scored: int, everyone: int, seed: int, reporter: Reporter) -> dict[str, int]:
    """What a result says of a user sample: how many users it was drawn from, and the seed;
    nothing when every user with held-out items was scored."""
    if scored == everyone:
        return {}
    reporter.note(
        f"scored a seeded sample of {scored:,} of the {everyone:,} users with held-out items "
        f"(--eval-users, seed {seed}); each ranks every item"
    )
    return {"sampled_from": everyone, "sample_seed": seed}


def per_user_csv(per_user: dict[str, np.ndarray], user_ids: np.ndarray) -> bytes:
    """One CSV row a scored user: the dataset's own id, then each metric (6 decimals)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = [name for name in per_user if name != "user"]
    writer.writerow(["user", *names])
    for row, index in enumerate(per_user["user"]):
        writer.writerow([user_ids[index], *(f"{per_user[name][row]:.6f}" for name in names)])
    return out.getvalue().encode()
