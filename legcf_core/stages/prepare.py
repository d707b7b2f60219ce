"""Prepare: read, validate and split a dataset into the run's ``data.safetensors``."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from legcf_core import artifacts as art
from legcf_core.config import PrepareConfig, ReadConfig
from legcf_core.data import Interactions, dataset_files, load_dataset
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.readers import Columns
from legcf_core.stages.inputs import SPLITS
from legcf_core.tokens import digest_bytes, id_arrays


def fingerprint(data: Interactions) -> str:
    """A digest of the mapped dataset; every later artifact records it."""
    digest = hashlib.sha256()
    for matrix in (data.train, data.valid, data.test):
        digest.update(np.asarray(matrix.shape, dtype=np.int64).tobytes())
        digest.update(matrix.indptr.astype(np.int64).tobytes())
        digest.update(matrix.indices.astype(np.int64).tobytes())
    for ids in (data.user_ids, data.item_ids):
        for chunk in digest_bytes(ids):
            digest.update(chunk)
    return digest.hexdigest()


def read_dataset(
    path: Path, seed: int, test_fraction: float, reading: ReadConfig, reporter: Reporter
) -> Interactions:
    """The dataset read and split as ``reading`` says, with the readers' notes shown."""
    task = reporter.task("reading dataset", None)
    columns = Columns(reading.user_col, reading.item_col, reading.rating_col, reading.time_col)
    data = load_dataset(path, test_fraction, seed, columns, reading.min_rating)
    task.close()
    for note in data.notes:
        reporter.note(note)
    return data


def prepare(
    run: art.RunDir,
    data_path: Path,
    seed: int = 2024,
    test_fraction: float = 0.2,
    reporter: Reporter | None = None,
    reading: ReadConfig | None = None,
) -> dict[str, Any]:
    """Read, validate and split a dataset; write ``data.safetensors`` and start the manifest."""
    reporter = reporter or SilentReporter()
    reading = reading or ReadConfig()
    PrepareConfig(seed, test_fraction).check()
    reading.check()
    started = time.perf_counter()
    data = read_dataset(Path(data_path), seed, test_fraction, reading, reporter)
    digest = fingerprint(data)
    tensors = {**id_arrays("user_ids", data.user_ids), **id_arrays("item_ids", data.item_ids)}
    for name in SPLITS:
        tensors.update(art.csr_arrays(name, data.split(name), with_data=False))
    meta = art.header("interactions", dataset=digest, n_users=data.n_users, n_items=data.n_items)
    summary = {
        "users": data.n_users,
        "items": data.n_items,
        "train": int(data.train.nnz),
        "valid": int(data.valid.nnz),
        "test": int(data.test.nnz),
        "duplicates": data.duplicates,
        **data.counts,
    }
    source = str(Path(data_path).resolve())
    sources = {str(p.resolve()): art.sha256_file(p) for p in dataset_files(Path(data_path))}
    with run.writing("prepare", create=True):
        if run.set_aside_malformed_manifest():
            reporter.note(
                f"{art.MANIFEST} was malformed: kept it as {art.MALFORMED_MANIFEST} and started a new one; "
                "rerun the later stages"
            )
        out = art.write_tensors(run.file(art.DATA_FILE), tensors, meta)
        run.record(
            "prepare",
            {
                "config": {
                    "data": source,
                    "seed": seed,
                    "test_fraction": test_fraction,
                    **reading.recorded(),
                },
                "inputs": {},
                "sources": sources,
                "outputs": {art.DATA_FILE: out},
                "metrics": summary,
                "seconds": round(time.perf_counter() - started, 3),
            },
            dataset={"fingerprint": digest, "source": source, **summary},
        )
    return summary
