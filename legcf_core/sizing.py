"""The codebook size c, sized to the data when ``-c`` is not given.

LEGCF stores c·d + N·t parameters (the c x d codebook and t weights an entity;
:func:`legcf_core.layers.codebook.legcf_params`) in place of a full table of
N·D, where D is the paper's d = 128, or d where d is wider: a LEGCF narrower
than 128 still replaces the 128-d table it is compared with. Without ``-c``, c
comes from one of two targets:

- ``--compression R`` (default 44, the paper's Gowalla ratio): the largest c
  written with two significant digits (..., 98, 99, 100, 110, ..., 490, 500,
  510, ...) at which N·D / (c·d + N·t) is at least R. The round number is the
  paper's habit (c = 500, 1000, 2000) and it makes Gowalla's default at d = 128
  exactly the paper's c = 500: the largest c at 44x is 503 there (44.003x), and
  500 gives 44.09x; at d = 64 it is c = 1000, the same 205,678
  parameters. Below 100 every integer has two significant digits.
- ``--budget P``: the largest c with c·d + N·t <= P.

Without ``--dim``, d is chosen from the data too, with the start: METIS
partitions the graph at the 128-d c first, and where it cuts less than
``CLUSTERED_CUT`` of what a random partition into c parts would ((c-1)/c of the
training edges), the graph is one of communities (Gowalla 0.74, the demo 0.57):
LEGCF starts from METIS anchors (:func:`choose_init`) at d = 64
(:func:`choose_width`), with c sized again at 64 (twice the meta-embeddings in
the same budget). Elsewhere (ml-1m 0.94) METIS anchors are close to random
ones; LEGCF starts from the graph's spectral rows, also at d = 64 (from METIS
anchors there, 128 would be better). docs/design.md has the measurements.

Either way c is at least t (each entity needs t distinct meta-embeddings) and
at most N; a target that would need c < t is refused with the most it allows.

The default target is out of reach where t is large against D (at t = 3,
N·t alone is more than N·128/44). A run that asked for no target then keeps
working: c is sized as the paper's configuration (d = 128, t = 2) would be at
44x, which is c = 500 on Gowalla whatever d and t, and raised to t on a dataset
too small for even that; the note says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from legcf_core.config import DEFAULT_COMPRESSION
from legcf_core.errors import ConfigError

REFERENCE_DIM, REFERENCE_PER_ENTITY = 128, 2  # the paper's Gowalla configuration
# Where METIS at the 128-d c cuts less than CLUSTERED_CUT of what a random partition would, the
# graph has communities: METIS anchors, and NARROW_DIM. Measured (docs/design.md), as that ratio:
# from METIS anchors narrower wins at 0.57 to 0.76 (demo, Gowalla, Gowalla's 15-core), ties at
# 0.60 (synthetic) and 0.87 (ml-1m thinned to 20%), loses at 0.91 and 0.94 (ml-1m thinned to 50%,
# ml-1m); a spectral start beats METIS at 0.94 and loses to it at 0.60 and 0.74.
NARROW_DIM, CLUSTERED_CUT = 64, 0.8


def relative_cut(edge_cut: int, edges: int, parts: int) -> float:
    """METIS's cut over a random partition's expected cut, (parts-1)/parts of the edges: 1 for
    a graph without communities, near 0 for one of disjoint communities."""
    if edges <= 0 or parts < 2 or edge_cut < 0:
        return 1.0
    return edge_cut / (edges * (parts - 1) / parts)


def choose_width(ratio: float) -> int:
    """d for METIS (or random) anchors on a graph whose METIS cut is ``ratio`` of a random
    partition's (:func:`relative_cut`): narrow on a graph of communities, where more
    meta-embeddings beat wider ones."""
    return NARROW_DIM if ratio < CLUSTERED_CUT else REFERENCE_DIM


def choose_init(ratio: float) -> str:
    """The start of ``--init auto``: METIS anchors on a graph of communities, where METIS finds
    them; elsewhere its anchors are close to random ones, and the graph's spectral rows start
    LEGCF better (docs/design.md)."""
    return "metis" if ratio < CLUSTERED_CUT else "spectral"


def reference_width(dim: int) -> int:
    """D, the width of the full table a LEGCF of width d replaces: 128, or d where wider."""
    return max(dim, REFERENCE_DIM)


def legcf_params(n_entities: int, dim: int, codebook_size: int, per_entity: int) -> int:
    """c*d + N*t: the parameter count of a LEGCF configuration, the budget others get."""
    return codebook_size * dim + n_entities * per_entity


def two_significant_floor(value: float) -> int:
    """``value`` rounded down to two significant digits (503.1 -> 500, 68.7 -> 68)."""
    if value < 100:
        return math.floor(value)
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.floor(value / scale) * scale


@dataclass(frozen=True)
class CodebookChoice:
    """A codebook size and why: ``rule`` is given (``-c``), compression or budget."""

    size: int
    rule: str
    target: float | None
    n_entities: int
    dim: int
    per_entity: int

    @property
    def params(self) -> int:
        return legcf_params(self.n_entities, self.dim, self.size, self.per_entity)

    @property
    def compression(self) -> float:
        """Parameters of the full table it replaces (N x D) over LEGCF's, at this c."""
        return self.n_entities * reference_width(self.dim) / self.params

    def reason(self) -> str:
        """One line that says which c and why, for notes and ``inspect``."""
        sizes = (
            f"c*d + N*t = {self.params:,} parameters for N = {self.n_entities:,}, d = {self.dim}, "
            f"t = {self.per_entity}: {self.compression:.1f}x smaller than the {reference_width(self.dim)}-d "
            "full table"
        )
        if self.rule == "compression":
            return (
                f"c = {self.size} from --compression {self.target:g}: the largest c with two "
                f"significant digits that is at least {self.target:g}x smaller ({sizes})"
            )
        if self.rule == "reference":
            return (
                f"c = {self.size}: --compression {DEFAULT_COMPRESSION:g} is out of reach at d = {self.dim}, "
                f"t = {self.per_entity}, so c is sized as at the paper's d = {REFERENCE_DIM}, "
                f"t = {REFERENCE_PER_ENTITY} (at least t) ({sizes})"
            )
        if self.rule == "budget":
            budget = int(self.target or 0)
            return f"c = {self.size} from --budget {budget:,}: the largest c that fits ({sizes})"
        return f"c = {self.size} as given by -c ({sizes})"

    def record(self) -> dict[str, Any]:
        """The manifest's account of the choice."""
        return {
            "codebook_size": self.size,
            "chosen_by": self.rule,
            "target": self.target,
            "dim": self.dim,
            "params": self.params,
            "compression": round(self.compression, 3),
            "reason": self.reason(),
        }


def choose_codebook(
    n_entities: int,
    dim: int,
    per_entity: int,
    codebook_size: int | None = None,
    compression: float | None = None,
    budget: int | None = None,
) -> CodebookChoice:
    """c as given, else from ``budget``, else from ``compression`` (default 44)."""
    if codebook_size is not None:
        return CodebookChoice(codebook_size, "given", None, n_entities, dim, per_entity)
    full = n_entities * reference_width(dim)
    if budget is not None:
        rule, target = "budget", float(budget)
        size = (budget - n_entities * per_entity) // dim
    else:
        rule, target = "compression", compression or DEFAULT_COMPRESSION
        size = _at_compression(n_entities, dim, per_entity, target)
    if size < per_entity and budget is None and compression is None:
        reference = _at_compression(n_entities, REFERENCE_DIM, REFERENCE_PER_ENTITY, DEFAULT_COMPRESSION)
        size = min(max(reference, per_entity), n_entities)
        return CodebookChoice(size, "reference", target, n_entities, dim, per_entity)
    if size < per_entity:
        field = "budget" if rule == "budget" else "compression"
        best = full / legcf_params(n_entities, dim, per_entity, per_entity)
        raise ConfigError(
            field,
            f"{target:g} leaves room for c = {max(size, 0)} meta-embeddings, fewer than t = {per_entity} "
            f"(N = {n_entities:,} entities, d = {dim}; the most LEGCF compresses here is {best:.1f}x, "
            f"at c = t); {'raise' if rule == 'budget' else 'lower'} it, lower -t, or give -c",
        )
    return CodebookChoice(min(size, n_entities), rule, target, n_entities, dim, per_entity)


def _at_compression(n_entities: int, dim: int, per_entity: int, target: float) -> int:
    """The largest two-significant-digit c with N*D / (c*d + N*t) >= target (may be < 1)."""
    room = n_entities * reference_width(dim) / target - n_entities * per_entity
    return two_significant_floor(max(room, 0) / dim)
