"""Partition: the initial assignment S0 from METIS (or random) anchors (Section 3.4)."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from legcf_core import artifacts as art
from legcf_core.config import PartitionConfig
from legcf_core.graph import bipartite_adjacency
from legcf_core.partition import (
    check_anchor_weight,
    check_sizes,
    initial_assignment,
    metis_partition,
    random_partition,
)
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.sizing import CodebookChoice, choose_codebook
from legcf_core.stages.inputs import load_data
from legcf_core.stages.record import record_stage


def partition(run: art.RunDir, config: PartitionConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Anchors from a METIS (or random) partition into c parts, then S0; writes the CSR file.
    Without ``config.codebook_size``, c is sized to the data (:mod:`legcf_core.sizing`)."""
    reporter = reporter or SilentReporter()
    config.check()
    with run.writing("partition"):
        data = load_data(run)
        choice = sized(config, data.n_entities, reporter)
        config = replace(config, codebook_size=choice.size)
        check_sizes(data.n_entities, config.codebook_size, config.per_entity)
        check_anchor_weight(config.anchor_weight, config.per_entity)
        started = time.perf_counter()
        task = reporter.task(f"{config.init} partition into {config.codebook_size} parts", None)
        if config.init == "metis":
            parts = metis_partition(bipartite_adjacency(data.train), config.codebook_size, config.seed)
        else:
            parts = random_partition(data.n_entities, config.codebook_size, config.seed)
        task.close()
        assignment = initial_assignment(
            parts.parts, config.codebook_size, config.per_entity, config.anchor_weight, config.seed
        )
        sizes = np.bincount(parts.parts, minlength=config.codebook_size)
        metrics = {
            "edge_cut": parts.edge_cut,
            "edges": int(data.train.nnz),
            "balance": round(float(sizes.max() / sizes.mean()), 4),
            "empty_parts": int((sizes == 0).sum()),
        }
        digest = run.load_manifest()["dataset"]["fingerprint"]
        tensors = {"parts": parts.parts, **art.csr_arrays("assignment", assignment)}
        recorded = {k: v for k, v in asdict(config).items() if v is not None}
        meta = art.header("assignment", dataset=digest, chosen_by=choice.rule, **recorded)
        out = art.write_tensors(run.file(art.PARTITION_FILE), tensors, meta)
        record_stage(
            run,
            "partition",
            config=asdict(config),
            inputs=(art.DATA_FILE,),
            outputs={art.PARTITION_FILE: out},
            metrics=metrics,
            started=started,
            codebook=choice.record(),
        )
        return {"codebook_size": choice.size, "chosen_by": choice.rule, **metrics}


def sized(config: PartitionConfig, n_entities: int, reporter: Reporter) -> CodebookChoice:
    """c as given, or sized to the data, with a note that says which and why."""
    choice = choose_codebook(
        n_entities, config.dim, config.per_entity, config.codebook_size, config.compression, config.budget
    )
    if choice.rule != "given":
        reporter.note(choice.reason())
    return choice
