"""Partition: the initial assignment S0 from METIS (or random) anchors (Section 3.4), or S0 and
a starting codebook coded from a trained teacher's table."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from legcf_core import artifacts as art
from legcf_core.config import PartitionConfig
from legcf_core.graph import bipartite_adjacency
from legcf_core.inspection import anchors as row_anchors
from legcf_core.partition import (
    check_anchor_weight,
    check_sizes,
    initial_assignment,
    metis_partition,
    random_partition,
)
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.sizing import CodebookChoice, choose_codebook
from legcf_core.stages.inputs import CODEBOOK_TENSOR, load_data
from legcf_core.stages.record import record_stage
from legcf_core.stages.teacher import Teacher, load_teacher
from legcf_core.table_coding import code_table


def partition(run: art.RunDir, config: PartitionConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Anchors from a METIS (or random) partition into c parts, then S0; or S0 and a starting
    codebook coded from a teacher's table (``init = "teacher"``). Writes the CSR file.
    Without ``config.codebook_size``, c is sized to the data (:mod:`legcf_core.sizing`)."""
    reporter = reporter or SilentReporter()
    config.check()
    with run.writing("partition"):
        data = load_data(run)
        teacher = load_teacher(run, config, data.n_entities) if config.init == "teacher" else None
        choice = sized(config, data.n_entities, reporter)
        config = replace(config, codebook_size=choice.size)
        check_sizes(data.n_entities, config.codebook_size, config.per_entity)
        check_anchor_weight(config.anchor_weight, config.per_entity)
        started = time.perf_counter()
        task = reporter.task(f"{config.init} partition into {config.codebook_size} parts", None)
        if teacher is not None:
            tensors, metrics = teacher_start(teacher, config)
        else:
            tensors, metrics = anchored_start(data.train, data.n_entities, config)
        task.close()
        digest = run.load_manifest()["dataset"]["fingerprint"]
        recorded = {k: v for k, v in asdict(config).items() if v is not None}
        meta = art.header("assignment", dataset=digest, chosen_by=choice.rule, **recorded)
        if teacher is not None:
            meta["teacher_model"] = teacher.digest
        out = art.write_tensors(run.file(art.PARTITION_FILE), tensors, meta)
        extra = {"teacher": teacher.record()} if teacher is not None else {}
        record_stage(
            run,
            "partition",
            config=asdict(config),
            inputs=(art.DATA_FILE,),
            outputs={art.PARTITION_FILE: out},
            metrics=metrics,
            started=started,
            codebook=choice.record(),
            **extra,
        )
        return {"codebook_size": choice.size, "chosen_by": choice.rule, **metrics}


def anchored_start(train: sp.csr_matrix, n_entities: int, config: PartitionConfig) -> tuple[dict, dict]:
    """S0 from METIS (or random) anchors with w*, and the partition's quality."""
    assert config.codebook_size is not None
    if config.init == "metis":
        parts = metis_partition(bipartite_adjacency(train), config.codebook_size, config.seed)
    else:
        parts = random_partition(n_entities, config.codebook_size, config.seed)
    assignment = initial_assignment(
        parts.parts, config.codebook_size, config.per_entity, config.anchor_weight, config.seed
    )
    sizes = np.bincount(parts.parts, minlength=config.codebook_size)
    metrics = {
        "edge_cut": parts.edge_cut,
        "edges": int(train.nnz),
        "balance": round(float(sizes.max() / sizes.mean()), 4),
        "empty_parts": int((sizes == 0).sum()),
    }
    return {"parts": parts.parts, **art.csr_arrays("assignment", assignment)}, metrics


def teacher_start(teacher: Teacher, config: PartitionConfig) -> tuple[dict, dict]:
    """S0 and the starting codebook coded from the teacher's rows; each entity's anchor (its
    ``parts`` entry) is its largest code."""
    assert config.codebook_size is not None
    code = code_table(teacher.rows, config.codebook_size, config.per_entity, seed=config.seed)
    s = code.assignment
    anchors = np.maximum(row_anchors(s), 0)  # an empty row (a zero teacher row) anchors at 0
    used = np.unique(s.indices).size
    metrics = {
        "coding_error": round(code.relative_error, 4),
        "codes_used": int(used),
        "revived": code.revived,
        "nonzeros": int(s.nnz),
    }
    tensors = {"parts": anchors, **art.csr_arrays("assignment", s), CODEBOOK_TENSOR: code.codebook.numpy()}
    return tensors, metrics


def sized(config: PartitionConfig, n_entities: int, reporter: Reporter) -> CodebookChoice:
    """c as given, or sized to the data, with a note that says which and why."""
    choice = choose_codebook(
        n_entities, config.dim, config.per_entity, config.codebook_size, config.compression, config.budget
    )
    if choice.rule != "given":
        reporter.note(choice.reason())
    return choice
