"""Tensor-train embedding tables (TT-Rec; Yin et al., MLSys'21).

The N x d table is the matricization of a 3-core tensor train. Rows are
indexed by the mixed-radix digits (i1, i2, i3) of p over N <= n1*n2*n3
(p = (i1*n2 + i2)*n3 + i3), columns by the digits (j1, j2, j3) of
d = d1*d2*d3, and

    W[p, (j1, j2, j3)] = G1[0, i1, j1, :] @ G2[:, i2, j2, :] @ G3[:, i3, j3, 0]

with cores G_k of shape (r_{k-1}, n_k, d_k, r_k), r_0 = r_3 = 1 and one TT
rank r = r_1 = r_2. The layer stores r*(n1*d1 + n3*d3) + r^2*n2*d2 numbers;
the rank is the largest that fits the budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from legcf_core import artifacts as art
from legcf_core.errors import ArtifactError, ConfigError
from legcf_core.layers import EmbeddingLayer, LayerSize, common_summary

Triple = tuple[int, int, int]


def row_factors(n_entities: int) -> Triple:
    """(a, b, c), a <= b <= c, with a*b*c >= N: a and b within one of m = ceil(cbrt(N)),
    c = ceil(N / (a*b)), and the smallest product a*b*c of these (Gowalla's
    70,839 -> 41, 41, 43: 72,283 rows, 2% padding).

    Because c is the ceiling, fewer than a*b of the a*b*c rows are padding:
    with c as the most significant digit (:func:`core_order`), every slice of
    every core belongs to at least one entity.
    """
    if n_entities < 1:
        raise ConfigError("n_entities", f"must be >= 1, got {n_entities}")
    m = round(n_entities ** (1 / 3))
    while m**3 < n_entities:
        m += 1
    while m > 1 and (m - 1) ** 3 >= n_entities:
        m -= 1
    near = range(max(1, m - 1), m + 2)
    candidates = [(a, b, -(-n_entities // (a * b))) for a in near for b in near if a <= b]
    return min(((a, b, c) for a, b, c in candidates if c >= b), key=lambda t: (math.prod(t), t[2] - t[0]))


def dim_factors(dim: int) -> Triple:
    """(d1, d2, d3) with d1*d2*d3 = d exactly, as balanced as d allows: the smallest
    largest factor, then the largest smallest one (128 -> 4, 4, 8; a prime d -> 1, 1, d)."""
    if dim < 1:
        raise ConfigError("dim", f"must be >= 1, got {dim}")
    triples = [
        (a, b, dim // (a * b))
        for a in range(1, dim + 1)
        if dim % a == 0
        for b in range(a, dim // a + 1)
        if (dim // a) % b == 0 and dim // (a * b) >= b
    ]
    return min(triples, key=lambda t: (t[2], -t[0]))


def core_order(rows: Triple, dims: Triple) -> tuple[Triple, Triple]:
    """Which row and dim factor goes to which core: (n1, n2, n3), (d1, d2, d3).

    The middle core stores r^2 numbers per (n2, d2) slice, the outer cores r,
    so the middle core gets the smallest row and dim factors. The outer cores
    pair the larger row factor with the smaller dim factor, which makes
    n1*d1 + n3*d3 the smallest of the two pairings. The largest row factor
    goes to the first core, the most significant digit of p.
    """
    (na, nb, nc), (da, db, dc) = sorted(rows), sorted(dims)
    return (nc, na, nb), (db, da, dc)


def tt_params(rows: Triple, dims: Triple, rank: int) -> int:
    """Stored numbers of the three cores at TT rank ``rank``."""
    (n1, n2, n3), (d1, d2, d3) = rows, dims
    return rank * (n1 * d1 + n3 * d3) + rank * rank * n2 * d2


def tt_rank(rows: Triple, dims: Triple, budget: int) -> int:
    """The largest TT rank r whose cores fit ``budget`` (their size grows with r)."""
    if tt_params(rows, dims, 1) > budget:
        raise ConfigError(
            "budget",
            f"{budget} is too small: a TT table with rows {_text(rows)} and dims {_text(dims)} "
            f"needs at least {tt_params(rows, dims, 1)} parameters (rank 1)",
        )
    (n1, n2, n3), (d1, d2, d3) = rows, dims
    outer, middle = n1 * d1 + n3 * d3, n2 * d2
    rank = int((-outer + math.sqrt(outer * outer + 4 * middle * budget)) / (2 * middle))
    rank = max(rank, 1)
    while tt_params(rows, dims, rank + 1) <= budget:  # correct any rounding of the root
        rank += 1
    while rank > 1 and tt_params(rows, dims, rank) > budget:
        rank -= 1
    return rank


def _text(factors: tuple[int, ...]) -> str:
    return ",".join(str(f) for f in factors)


def _parse(text: str, field: str) -> Triple:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ArtifactError(f"TT header field {field} is not a list of integers: {text!r}") from None
    if len(values) != 3 or min(values) < 1:
        raise ArtifactError(f"TT header field {field} must hold three positive factors, got {text!r}")
    return values  # type: ignore[return-value]


class _ComposeRows(torch.autograd.Function):
    """The first N rows of the full table the three cores compose, with a hand-written backward.

    Forward: L = G1 G2 over r_1, one (n1 d1, r) @ (r, n2 d2 r) product, then
    L G3 over r_2, one (n1 d1 n2 d2, r) @ (r, n3 d3) product. Its result is
    laid out (i1, j1, i2, j2, i3, j3); one copy reorders it to rows (i1, i2, i3)
    and columns (j1, j2, j3). Backward reorders the gradient of the N rows
    straight into the product's layout (padding rows get zeros) and runs the
    four products' transposes. Autograd through the same steps makes two more
    full-size passes (a zero-filled padded gradient and a second reordering
    copy): on Gowalla (N = 70,839, d = 128, rank 33) one forward+backward took
    0.17 s here against 0.21 s with autograd (medians, one thread of a busy
    2-core CPU).
    """

    @staticmethod
    def forward(ctx, core1, core2, core3, n_entities):
        r = core2.shape[0]
        (n1, d1), (n2, d2), (n3, d3) = core1.shape[1:3], core2.shape[1:3], core3.shape[1:3]
        first = core1.reshape(n1 * d1, r)
        middle = core2.reshape(r, n2 * d2 * r)
        last = core3.reshape(r, n3 * d3)
        left = (first @ middle).view(n1 * d1 * n2 * d2, r)
        table = (left @ last).view(n1, d1, n2, d2, n3, d3).permute(0, 2, 4, 1, 3, 5)
        ctx.save_for_backward(first, middle, last, left)
        ctx.factors = (n1, n2, n3), (d1, d2, d3)
        ctx.n_entities = n_entities
        return table.reshape(n1 * n2 * n3, d1 * d2 * d3)[:n_entities]

    @staticmethod
    def backward(ctx, grad):
        first, middle, last, left = ctx.saved_tensors
        (n1, n2, n3), (d1, d2, d3) = ctx.factors
        grad = grad.contiguous()
        r, n = first.shape[1], ctx.n_entities
        block = n2 * n3  # rows per first-core digit i1
        whole = n // block  # i1 values whose rows are all entities
        ordered = grad.new_empty(n1, d1, n2, d2, n3, d3)
        ordered[:whole] = grad[: whole * block].view(whole, n2, n3, d1, d2, d3).permute(0, 3, 1, 4, 2, 5)
        if whole < n1:  # the last digit's rows are part entities, part padding
            tail = grad.new_zeros(block, d1 * d2 * d3)
            tail[: n - whole * block] = grad[whole * block :]
            ordered[whole] = tail.view(n2, n3, d1, d2, d3).permute(2, 0, 3, 1, 4)
            ordered[whole + 1 :] = 0
        ordered = ordered.view(n1 * d1 * n2 * d2, n3 * d3)
        grad_left = (ordered @ last.t()).view(n1 * d1, n2 * d2 * r)
        grad_last = left.t() @ ordered
        grad_first = grad_left @ middle.t()
        grad_middle = first.t() @ grad_left
        return (
            grad_first.view(1, n1, d1, r),
            grad_middle.view(r, n2, d2, r),
            grad_last.view(r, n3, d3, 1),
            None,
        )


class TTLayer(EmbeddingLayer):
    """An N x d table stored as three tensor-train cores at one TT rank."""

    name = "tt"
    sized_by_budget = True

    def __init__(self, cores: tuple[torch.Tensor, torch.Tensor, torch.Tensor], n_entities: int, budget: int):
        super().__init__()
        first, middle, last = cores
        r = middle.shape[0]
        if (
            first.dim() != 4
            or middle.dim() != 4
            or last.dim() != 4
            or first.shape[0] != 1
            or first.shape[3] != r
            or middle.shape[3] != r
            or last.shape[0] != r
            or last.shape[3] != 1
        ):
            shapes = ", ".join("x".join(map(str, c.shape)) for c in cores)
            raise ArtifactError(f"TT cores do not chain: {shapes}")
        self.rows: Triple = (first.shape[1], middle.shape[1], last.shape[1])
        self.dims: Triple = (first.shape[2], middle.shape[2], last.shape[2])
        if math.prod(self.rows) < n_entities:
            raise ArtifactError(
                f"TT cores index {math.prod(self.rows)} rows, fewer than {n_entities} entities"
            )
        self.n_entities = n_entities
        self.budget = budget
        self.core1 = torch.nn.Parameter(first.clone())
        self.core2 = torch.nn.Parameter(middle.clone())
        self.core3 = torch.nn.Parameter(last.clone())

    @property
    def rank(self) -> int:
        return int(self.core2.shape[0])

    @property
    def dim(self) -> int:
        return math.prod(self.dims)

    @classmethod
    def create(cls, size: LayerSize) -> TTLayer:
        """Cores at the largest rank that fits ``size.budget``, drawn i.i.d. N(0, s^2).

        A composed entry is a sum of r^2 products of three independent
        zero-mean entries, so its variance is r^2 s^6. s is set so that this
        equals 2 / (N + d), the variance of a Xavier-uniform N x d table
        (bound b = sqrt(6 / (N + d)), variance b^2 / 3). Gaussian cores are
        TT-Rec's recommended ("sampled Gaussian") initialization.
        """
        if size.budget is None:
            raise ConfigError("budget", "a TT table is sized by a parameter budget; none was given")
        rows, dims = core_order(row_factors(size.n_entities), dim_factors(size.dim))
        rank = tt_rank(rows, dims, size.budget)
        target = 2.0 / (size.n_entities + size.dim)
        std = (target / rank**2) ** (1 / 6)
        generator = torch.Generator().manual_seed(size.seed)
        ranks = (1, rank, rank, 1)
        cores = tuple(
            torch.randn(ranks[k], rows[k], dims[k], ranks[k + 1], generator=generator) * std for k in range(3)
        )
        return cls(cores, size.n_entities, size.budget)  # type: ignore[arg-type]

    def forward(self) -> torch.Tensor:
        """All N rows: two matrix products over the cores' slices and one reorder of the axes."""
        return _ComposeRows.apply(self.core1, self.core2, self.core3, self.n_entities)

    def stored_params(self) -> int:
        return int(self.core1.numel() + self.core2.numel() + self.core3.numel())

    def header(self) -> dict[str, str]:
        return {
            "budget": str(self.budget),
            "tt_rank": str(self.rank),
            "row_factors": _text(self.rows),
            "dim_factors": _text(self.dims),
        }

    def describe(self, n_users: int) -> dict[str, Any]:
        cores = (self.core1, self.core2, self.core3)
        return {
            **common_summary(self, n_users, self.n_entities, self.dim),
            "tt_rank": self.rank,
            "row_factors": list(self.rows),
            "padded_rows": math.prod(self.rows),
            "dim_factors": list(self.dims),
            "core_shapes": ["x".join(str(s) for s in core.shape) for core in cores],
            "core_params": [int(core.numel()) for core in cores],
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, str], n_entities: int
    ) -> TTLayer:
        """The cores, shaped by the header's rank and factorizations."""
        try:
            rows, dims = (
                _parse(header["row_factors"], "row_factors"),
                _parse(header["dim_factors"], "dim_factors"),
            )
            rank = int(header["tt_rank"])
        except (KeyError, ValueError) as problem:
            raise art.Malformed(f"a TT model's header is incomplete: {problem}") from None
        if len(rows) != 3 or len(dims) != 3 or min(*rows, *dims) < 1 or not 1 <= rank <= 4096:
            raise art.Malformed(f"TT factors {rows} x {dims} at rank {rank} are not three positive factors")
        if math.prod(rows) < n_entities or ("dim" in header and str(math.prod(dims)) != header["dim"]):
            raise art.Malformed(f"TT factors {rows} x {dims} do not cover {n_entities} entities at d")
        ranks = (1, rank, rank, 1)
        cores = []
        for k in range(3):
            shape = (ranks[k], rows[k], dims[k], ranks[k + 1])
            values = art.require(arrays, f"core{k + 1}", "float32", shape)
            cores.append(torch.from_numpy(np.array(values)))
        return cls(tuple(cores), n_entities, int(header.get("budget", 0)))  # type: ignore[arg-type]
