"""Partition: the initial assignment S0 from METIS (or random) anchors (Section 3.4), or S0 and
a starting codebook coded from spectral rows of the graph or from a trained teacher's table."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
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
    NARROW_DIM,
    REFERENCE_DIM,
    CodebookChoice,
    choose_codebook,
    choose_init,
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
        config, width, start, probe = resolve_start(config, data.train, data.n_entities, teacher, reporter)
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
            start=start,
            **extra,
        )
        return {"codebook_size": choice.size, "dim": config.dim, "chosen_by": choice.rule, **metrics}


def anchored_start(
    train: sp.csr_matrix, n_entities: int, config: PartitionConfig, probe: Probe | None = None
) -> tuple[dict, dict]:
    """S0 from METIS (or random) anchors with w* and the others ``config.others`` picks, and the
    partition's quality; ``probe``'s METIS partition is reused where it was made at this c."""
    assert config.codebook_size is not None
    adjacency = bipartite_adjacency(train)
    if probe is not None and probe.size == config.codebook_size and config.init == "metis":
        parts = probe.partition
    elif config.init == "metis":
        parts = metis_partition(adjacency, config.codebook_size, config.seed)
    else:
        parts = random_partition(n_entities, config.codebook_size, config.seed)
    neighbors = adjacency if config.others == "neighbor" else None
    assignment = initial_assignment(
        parts.parts, config.codebook_size, config.per_entity, config.anchor_weight, config.seed, neighbors
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


@dataclass(frozen=True)
class Probe:
    """METIS at the probe's c, and how its cut compares with a random partition's."""

    partition: Partition
    size: int
    ratio: float

    def record(self, threshold: float) -> dict[str, Any]:
        return {
            "probe_codebook_size": self.size,
            "probe_edge_cut": int(self.partition.edge_cut),
            "relative_cut": round(self.ratio, 4),
            "threshold": threshold,
        }


def resolve_start(
    config: PartitionConfig,
    train: sp.csr_matrix,
    n_entities: int,
    teacher: Teacher | None,
    reporter: Reporter,
) -> tuple[PartitionConfig, dict[str, Any], dict[str, Any], Probe | None]:
    """The init and d. ``auto`` is METIS where METIS's cut at the probe's c says the graph has
    communities, else spectral (:func:`legcf_core.sizing.choose_init`). d as given (--dim); else
    the teacher's; else 128 where c is given; else 64 for spectral; else by the same cut
    (:func:`legcf_core.sizing.choose_width`). Returns the config with both, how each was chosen,
    and the METIS probe where one was made (:func:`anchored_start` reuses it at its c)."""
    if teacher is not None:
        dim = config.dim or int(teacher.rows.shape[1])
        width = {"dim": dim, "chosen_by": "given" if config.dim else "teacher"}
        return replace(config, dim=dim), width, {"init": "teacher", "chosen_by": "given"}, None
    anchored = config.init in ("metis", "random")
    needs_cut = config.init == "auto" or (anchored and config.dim is None and config.codebook_size is None)
    probe = probe_cut(config, train, n_entities, reporter) if needs_cut else None
    init, start = config.init, {"init": config.init, "chosen_by": "given"}
    if init == "auto":
        init = choose_init(probe.ratio) if probe is not None else "metis"
        measured = probe.record(CLUSTERED_CUT) if probe is not None else {}
        start = {"init": init, "chosen_by": "edge_cut" if probe else "default", **measured}
    dim, width = chosen_width(config, init, probe)
    if probe is not None:
        communities = "a graph of communities" if probe.ratio < CLUSTERED_CUT else "no strong communities"
        reporter.note(
            f"{init} start at d = {dim}: METIS at c = {probe.size} cuts "
            f"{probe.partition.edge_cut / train.nnz:.0%} of the training edges, {probe.ratio:.2f} of a "
            f"random partition's cut ({communities}; {CLUSTERED_CUT:g} divides them); --init and --dim "
            "choose others"
        )
    return replace(config, init=init, dim=dim), width, start, probe


def chosen_width(config: PartitionConfig, init: str, probe: Probe | None) -> tuple[int, dict[str, Any]]:
    """d and how it was chosen, once the init is known (:func:`resolve_start`)."""
    if config.dim is not None:
        return config.dim, {"dim": config.dim, "chosen_by": "given"}
    if config.codebook_size is None and init == "spectral":
        return NARROW_DIM, {"dim": NARROW_DIM, "chosen_by": "spectral"}
    if config.codebook_size is None and probe is not None:
        dim = choose_width(probe.ratio)
        return dim, {"dim": dim, "chosen_by": "edge_cut", **probe.record(CLUSTERED_CUT)}
    return REFERENCE_DIM, {"dim": REFERENCE_DIM, "chosen_by": "default"}


def probe_cut(
    config: PartitionConfig, train: sp.csr_matrix, n_entities: int, reporter: Reporter
) -> Probe | None:
    """METIS at the given c, or at the c the budget allows at d = 128; None where no such
    partition can be made (too little data, or a budget that fits no c at 128)."""
    size = config.codebook_size
    if size is None:
        try:
            size = choose_codebook(
                n_entities, REFERENCE_DIM, config.per_entity, None, config.compression, config.budget
            ).size
        except ConfigError:  # sizing at 128 fails; sized() says why, at the d it ends with
            return None
    if size < 2 or train.nnz == 0 or size > n_entities:
        return None
    task = reporter.task(f"METIS at c = {size}, to measure the graph's communities", None)
    partition = metis_partition(bipartite_adjacency(train), size, config.seed)
    task.close()
    return Probe(partition, size, relative_cut(partition.edge_cut, int(train.nnz), size))


def sized(config: PartitionConfig, n_entities: int, reporter: Reporter) -> CodebookChoice:
    """c as given, or sized to the data, with a note that says which and why."""
    choice = choose_codebook(
        n_entities, config.dim, config.per_entity, config.codebook_size, config.compression, config.budget
    )
    if choice.rule != "given":
        reporter.note(choice.reason())
    return choice
