"""Prepare: read, validate and split a dataset into the run's ``data.safetensors``."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from legcf_core import artifacts as art
from legcf_core.config import DEFAULT_DIM, PartitionConfig, PrepareConfig, ReadConfig
from legcf_core.data import Interactions, dataset_files, load_dataset, split_method
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.readers import Columns
from legcf_core.sizing import choose_codebook
from legcf_core.splits import split_notes
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


def protocol_header(method: str, config: PrepareConfig) -> dict[str, str]:
    """The data file's header fields that record the protocol. The LEGCF paper's (a random or
    the dataset's own split, test-third validation) adds none, so its file is byte-identical
    to one written before these fields existed, and a file without them reads as test-third."""
    fields = {}
    if method == "time":
        fields["split"] = method
    if config.validation != "test-third":
        fields["validation"] = config.validation
    if config.fraction_of_train is not None:
        fields["valid_fraction"] = repr(config.fraction_of_train)
    return fields


def report_protocol(data: Interactions, reporter: Reporter) -> int | None:
    """Notes on splits that came out thin, on what no validation split means, and on the c
    that partition sizes to this data by default; returns that c (None: too few entities)."""
    for note in split_notes(data.train, data.valid, data.test, data.validation):
        reporter.note(note)
    if data.validation == "none":
        reporter.note(
            "--validation none: no validation split; training runs its fixed epochs, keeps the last model"
        )
    defaults = PartitionConfig()
    if data.n_entities < defaults.per_entity:
        return None
    choice = choose_codebook(data.n_entities, DEFAULT_DIM, defaults.per_entity)
    reporter.note(
        f"partition's default at d = {DEFAULT_DIM} (without --dim or -c: d = 64, about twice this c): "
        f"{choice.reason()}; -c, --compression or --budget choose another"
    )
    return choice.size


def split_summary(data: Interactions, method: str) -> dict[str, Any]:
    """What prepare reports and the manifest keeps about the dataset and its splits."""
    return {
        "users": data.n_users,
        "items": data.n_items,
        "train": int(data.train.nnz),
        "valid": int(data.valid.nnz),
        "test": int(data.test.nnz),
        "tested_users": int((np.diff(data.test.indptr) > 0).sum()),
        "duplicates": data.duplicates,
        "split": method,
        "validation": data.validation,
        **data.counts,
    }


def read_dataset(path: Path, config: PrepareConfig, reading: ReadConfig, reporter: Reporter) -> Interactions:
    """The dataset read as ``reading`` says and split as ``config`` says; the readers' notes shown."""
    task = reporter.task("reading dataset", None)
    columns = Columns(reading.user_col, reading.item_col, reading.rating_col, reading.time_col)
    data = load_dataset(
        path,
        config.test_fraction,
        config.seed,
        config.split,
        config.validation,
        config.fraction_of_train,
        columns,
        reading.min_rating,
    )
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
    *,
    split: str = "auto",
    validation: str = "test-third",
    valid_fraction: float | None = None,
    reading: ReadConfig | None = None,
) -> dict[str, Any]:
    """Read, validate and split a dataset under the chosen protocol (:mod:`legcf_core.splits`);
    write ``data.safetensors`` and start the manifest."""
    reporter, reading = reporter or SilentReporter(), reading or ReadConfig()
    config = PrepareConfig(seed, test_fraction, split, validation, valid_fraction)
    config.check()
    reading.check()
    started = time.perf_counter()
    path = Path(data_path)
    data = read_dataset(path, config, reading, reporter)
    method = split_method(path, split)
    default_c = report_protocol(data, reporter)
    digest = fingerprint(data)
    tensors = {**id_arrays("user_ids", data.user_ids), **id_arrays("item_ids", data.item_ids)}
    for name in SPLITS:
        tensors.update(art.csr_arrays(name, data.split(name), with_data=False))
    fields = protocol_header(method, config)
    meta = art.header("interactions", dataset=digest, n_users=data.n_users, n_items=data.n_items, **fields)
    summary = {**split_summary(data, method), "default_codebook_size": default_c}
    recorded = {"seed": seed, "test_fraction": test_fraction, "split": method, "validation": validation}
    recorded.update(reading.recorded())
    if config.fraction_of_train is not None:
        recorded["valid_fraction"] = config.fraction_of_train
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
                "config": {"data": source, **recorded},
                "inputs": {},
                "sources": sources,
                "outputs": {art.DATA_FILE: out},
                "metrics": summary,
                "seconds": round(time.perf_counter() - started, 3),
            },
            dataset={"fingerprint": digest, "source": source, **summary},
        )
    return summary


def prepare_as(
    run: art.RunDir,
    data_path: Path,
    config: PrepareConfig,
    reporter: Reporter | None = None,
    reading: ReadConfig | None = None,
) -> dict[str, Any]:
    """:func:`prepare` with every setting from one config (``run`` and ``compare`` use it)."""
    return prepare(
        run,
        data_path,
        config.seed,
        config.test_fraction,
        reporter,
        split=config.split,
        validation=config.validation,
        valid_fraction=config.valid_fraction,
        reading=reading,
    )
