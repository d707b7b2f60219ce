"""Partition: the initial assignment S0 from METIS (or random) anchors (Section 3.4), or S0 and
a starting codebook coded from spectral rows of the graph or from a trained teacher's table."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from legcf_core import artifacts as art
from legcf_core.config import PartitionConfig
from legcf_core.errors import ConfigError
from legcf_core.graph import bipartite_adjacency
from legcf_core.inspection import anchors as row_anchors
from legcf_core.partition import (
    Partition,
    check_anchor_weight,
    check_sizes,
    initial_assignment,
    metis_partition,
    random_partition,
)
from legcf_core.progress import Reporter, SilentReporter
from legcf_core.sizing import (
    CLUSTERED_CUT,
    REFERENCE_DIM,
    CodebookChoice,
    choose_codebook,
    choose_width,
    relative_cut,
)
from legcf_core.spectral import spectral_rows
from legcf_core.stages.inputs import CODEBOOK_TENSOR, load_data
from legcf_core.stages.record import record_stage
from legcf_core.stages.teacher import Teacher, load_teacher
from legcf_core.table_coding import code_table


def partition(run: art.RunDir, config: PartitionConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Anchors from a METIS (or random) partition into c parts, then S0; or S0 and a starting
    codebook coded from rows: the graph's spectral rows (``init = "spectral"``) or a teacher's
    table (``init = "teacher"``). Writes the CSR file.
    Without ``config.codebook_size``, c is sized to the data, and without ``config.dim`` so is d
    (:mod:`legcf_core.sizing`)."""
    reporter = reporter or SilentReporter()
    config.check()
    with run.writing("partition"):
        data = load_data(run)
        teacher = load_teacher(run, config, data.n_entities) if config.init == "teacher" else None
        config, width, probe = resolve_width(config, data.train, data.n_entities, teacher, reporter)
        choice = sized(config, data.n_entities, reporter)
        config = replace(config, codebook_size=choice.size)
        check_sizes(data.n_entities, config.codebook_size, config.per_entity)
        check_anchor_weight(config.anchor_weight, config.per_entity)
        started = time.perf_counter()
        task = reporter.task(f"{config.init} partition into {config.codebook_size} parts", None)
        if teacher is not None:
            tensors, metrics = coded_start(teacher.rows, config)
        elif config.init == "spectral":
            tensors, metrics = spectral_start(data.train, config)
        else:
            tensors, metrics = anchored_start(data.train, data.n_entities, config, probe)
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
            width=width,
            **extra,
        )
        return {"codebook_size": choice.size, "dim": config.dim, "chosen_by": choice.rule, **metrics}


def anchored_start(
    train: sp.csr_matrix, n_entities: int, config: PartitionConfig, probe: Partition | None = None
) -> tuple[dict, dict]:
    """S0 from METIS (or random) anchors with w*, and the partition's quality; ``probe`` is a
    METIS partition already made at this c, reused."""
    assert config.codebook_size is not None
    if probe is not None and config.init == "metis":
        parts = probe
    elif config.init == "metis":
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


def spectral_start(train: sp.csr_matrix, config: PartitionConfig) -> tuple[dict, dict]:
    """S0 and the starting codebook coded from the graph's spectral rows (:mod:`legcf_core.spectral`)."""
    assert config.dim is not None
    started = time.perf_counter()
    rows = spectral_rows(train, config.dim, config.seed)
    seconds = round(time.perf_counter() - started, 2)
    tensors, metrics = coded_start(torch.from_numpy(rows), config)
    return tensors, {"svd_seconds": seconds, **metrics}


def coded_start(rows: torch.Tensor, config: PartitionConfig) -> tuple[dict, dict]:
    """S0 and the starting codebook coded from N x d ``rows``; each entity's anchor (its
    ``parts`` entry) is its largest code."""
    assert config.codebook_size is not None
    code = code_table(rows, config.codebook_size, config.per_entity, seed=config.seed)
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


def resolve_width(
    config: PartitionConfig,
    train: sp.csr_matrix,
    n_entities: int,
    teacher: Teacher | None,
    reporter: Reporter,
) -> tuple[PartitionConfig, dict[str, Any], Partition | None]:
    """d as given (--dim); else the teacher's; else 128 where c is given; else by the cut of
    METIS at the 128-d c (:func:`legcf_core.sizing.choose_width`). Returns the config with d,
    how d was chosen, and that METIS partition where it can be reused (d stayed 128)."""
    if config.dim is not None:
        return config, {"dim": config.dim, "chosen_by": "given"}, None
    if teacher is not None:
        dim = int(teacher.rows.shape[1])
        return replace(config, dim=dim), {"dim": dim, "chosen_by": "teacher"}, None
    default = replace(config, dim=REFERENCE_DIM), {"dim": REFERENCE_DIM, "chosen_by": "default"}, None
    if config.codebook_size is not None:
        return default
    try:
        probe_size = choose_codebook(
            n_entities, REFERENCE_DIM, config.per_entity, None, config.compression, config.budget
        ).size
    except ConfigError:  # sizing at 128 fails; sized() says why, at the d it ends with
        return default
    if probe_size < 2 or train.nnz == 0:
        return default
    task = reporter.task(f"METIS at d = {REFERENCE_DIM}'s c = {probe_size}, to choose d", None)
    probe = metis_partition(bipartite_adjacency(train), probe_size, config.seed)
    task.close()
    ratio = relative_cut(probe.edge_cut, int(train.nnz), probe_size)
    dim = choose_width(probe.edge_cut, int(train.nnz), probe_size)
    kind = "a graph of communities" if dim != REFERENCE_DIM else "no strong communities"
    reporter.note(
        f"d = {dim}: METIS at d = {REFERENCE_DIM}'s c = {probe_size} cuts {probe.edge_cut / train.nnz:.0%} "
        f"of the training edges, {ratio:.2f} of a random partition's cut ({kind}; d = 64 below "
        f"{CLUSTERED_CUT:g}); --dim chooses another"
    )
    width = {
        "dim": dim,
        "chosen_by": "edge_cut",
        "probe_codebook_size": probe_size,
        "probe_edge_cut": int(probe.edge_cut),
        "relative_cut": round(ratio, 4),
        "threshold": CLUSTERED_CUT,
    }
    return replace(config, dim=dim), width, probe if dim == REFERENCE_DIM else None


def sized(config: PartitionConfig, n_entities: int, reporter: Reporter) -> CodebookChoice:
    """c as given, or sized to the data, with a note that says which and why."""
    choice = choose_codebook(
        n_entities, config.dim, config.per_entity, config.codebook_size, config.compression, config.budget
    )
    if choice.rule != "given":
        reporter.note(choice.reason())
    return choice
