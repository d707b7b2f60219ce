"""The tensor-train layer: its factorizations, the rank a budget buys, the rows it
composes, its gradients and its storage round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, copy_run, invoke, snapshot
from hypothesis import given
from hypothesis import strategies as st

from legcf_core.errors import ConfigError
from legcf_core.layers import LayerSize, xavier_uniform
from legcf_core.layers.tt import (
    TTLayer,
    _ComposeRows,
    core_order,
    dim_factors,
    row_factors,
    tt_params,
    tt_rank,
)


def small_layer(n: int = 50, dim: int = 12, budget: int = 400, seed: int = 3) -> TTLayer:
    return TTLayer.create(LayerSize(n, dim, seed, budget=budget))


@given(st.integers(1, 3_000_000))
def test_row_factors_cover_n_with_less_than_one_top_block_of_padding(n):
    a, b, c = row_factors(n)
    assert a <= b <= c
    assert a * b * c >= n
    assert (c - 1) * a * b < n  # the most significant digit is used: no core slice is padding only
    m = math.ceil(round(n ** (1 / 3), 9))
    if m >= 3:
        assert {a, b} <= {m - 1, m, m + 1}
        assert c <= m + 3


def test_row_factors_of_known_sizes():
    assert row_factors(1) == (1, 1, 1)
    assert row_factors(1000) == (10, 10, 10)
    assert row_factors(70_839) == (41, 41, 43)  # Gowalla: 72,283 rows


@given(st.integers(1, 5000))
def test_dim_factors_multiply_to_d_exactly(dim):
    factors = dim_factors(dim)
    assert math.prod(factors) == dim
    assert max(factors) <= max(
        max(a, b, dim // (a * b))
        for a in range(1, dim + 1)
        if dim % a == 0
        for b in range(1, dim // a + 1)
        if (dim // a) % b == 0
    )  # no factorization has a smaller largest factor


@pytest.mark.parametrize(
    ("dim", "factors"), [(1, (1, 1, 1)), (7, (1, 1, 7)), (12, (2, 2, 3)), (64, (4, 4, 4)), (128, (4, 4, 8))]
)
def test_dim_factors_are_balanced(dim, factors):
    assert dim_factors(dim) == factors


def test_middle_core_gets_the_smallest_factors():
    assert core_order((41, 41, 43), (4, 4, 8)) == ((43, 41, 41), (4, 4, 8))
    assert core_order((2, 3, 5), (1, 1, 7)) == ((5, 2, 3), (1, 1, 7))


@given(st.integers(1, 200_000), st.integers(1, 256), st.integers(1, 2_000_000))
def test_rank_spends_the_budget_and_no_more(n, dim, budget):
    rows, dims = core_order(row_factors(n), dim_factors(dim))
    if tt_params(rows, dims, 1) > budget:
        with pytest.raises(ConfigError) as error:
            tt_rank(rows, dims, budget)
        assert error.value.field == "budget"
        return
    rank = tt_rank(rows, dims, budget)
    assert tt_params(rows, dims, rank) <= budget < tt_params(rows, dims, rank + 1)


def test_the_layer_stores_what_the_rank_costs():
    layer = small_layer(n=70, dim=16, budget=1000)
    rows, dims = layer.rows, layer.dims
    assert layer.stored_params() == tt_params(rows, dims, layer.rank) <= 1000
    assert tt_params(rows, dims, layer.rank + 1) > 1000
    assert [tuple(c.shape) for c in (layer.core1, layer.core2, layer.core3)] == [
        (1, rows[0], dims[0], layer.rank),
        (layer.rank, rows[1], dims[1], layer.rank),
        (layer.rank, rows[2], dims[2], 1),
    ]


def reference_row(layer: TTLayer, p: int) -> torch.Tensor:
    """Row p by the definition: contract the cores' slices at p's mixed-radix digits."""
    n1, n2, n3 = layer.rows
    d1, d2, d3 = layer.dims
    i1, i2, i3 = p // (n2 * n3), (p // n3) % n2, p % n3
    row = torch.empty(d1 * d2 * d3, dtype=torch.float64)
    g1, g2, g3 = (c.detach().double() for c in (layer.core1, layer.core2, layer.core3))
    for j1 in range(d1):
        for j2 in range(d2):
            for j3 in range(d3):
                value = g1[0, i1, j1, :] @ g2[:, i2, j2, :] @ g3[:, i3, j3, 0]
                row[(j1 * d2 + j2) * d3 + j3] = value
    return row


@pytest.mark.parametrize(("n", "dim", "budget"), [(50, 12, 400), (1000, 16, 3000), (7, 7, 100), (1, 1, 10)])
def test_rows_match_the_slow_contraction(n, dim, budget):
    layer = small_layer(n, dim, budget)
    rows = layer().detach().double()
    assert rows.shape == (n, dim)
    for p in sorted({0, 1, n // 3, n // 2, n - 2, n - 1} & set(range(n))):
        assert torch.allclose(rows[p], reference_row(layer, p), rtol=1e-5, atol=1e-9), p


def test_distinct_ids_give_distinct_rows():
    rows = small_layer(n=1000, dim=16, budget=3000)().detach()
    assert torch.unique(rows, dim=0).shape[0] == 1000


def test_gradients_reach_every_slice_of_every_core():
    layer = small_layer(n=50, dim=12, budget=400)
    weights = torch.randn(50, 12, generator=torch.Generator().manual_seed(0))
    (layer() * weights).sum().backward()
    for core, axis in ((layer.core1, 1), (layer.core2, 1), (layer.core3, 1)):
        assert core.grad is not None
        per_slice = core.grad.abs().sum(dim=[k for k in range(4) if k != axis])
        assert (per_slice > 0).all()


def test_hand_written_backward_passes_gradcheck_on_a_padded_table():
    layer = small_layer(n=10, dim=4, budget=40)
    assert math.prod(layer.rows) > 10 and layer.rank > 1  # some rows are padding
    cores = tuple(p.detach().double().requires_grad_() for p in layer.parameters())
    assert torch.autograd.gradcheck(lambda a, b, c: _ComposeRows.apply(a, b, c, 10), cores)


def test_initial_rows_have_the_variance_of_a_xavier_table():
    n, dim = 20_000, 64
    rows = TTLayer.create(LayerSize(n, dim, 5, budget=60_000))().detach()
    xavier = xavier_uniform(n, dim, 5)
    assert rows.var().item() == pytest.approx(xavier.var().item(), rel=0.25)
    assert abs(rows.mean().item()) < 0.1 * rows.std().item()


def test_the_same_seed_gives_the_same_layer_and_another_seed_another():
    a, b, c = small_layer(seed=1), small_layer(seed=1), small_layer(seed=2)
    assert torch.equal(a(), b())
    assert not torch.equal(a(), c())


def test_arrays_and_header_rebuild_the_same_layer():
    layer = small_layer(n=100, dim=12, budget=600)
    with torch.no_grad():
        layer.core2.mul_(1.5)  # not the initial values: a trained layer
    arrays = {name: value.copy() for name, value in layer.arrays().items()}
    assert set(arrays) == {"core1", "core2", "core3"}
    assert sum(v.size for v in arrays.values()) == layer.stored_params()
    header = layer.header()
    assert header["budget"] == "600" and header["tt_rank"] == str(layer.rank)
    assert header["row_factors"] == ",".join(map(str, layer.rows))
    assert header["dim_factors"] == ",".join(map(str, layer.dims))
    rebuilt = TTLayer.from_arrays(arrays, header, 100)
    assert torch.equal(rebuilt(), layer())
    assert rebuilt.header() == header
    assert rebuilt.describe(40) == layer.describe(40)


def test_describe_shows_the_rank_and_the_cores():
    layer = small_layer(n=100, dim=12, budget=600)
    summary = layer.describe(40)
    assert summary["params"] == layer.stored_params() == sum(summary["core_params"])
    assert summary["tt_rank"] == layer.rank
    assert summary["row_factors"] == list(layer.rows) and summary["dim_factors"] == list(layer.dims)
    assert summary["padded_rows"] == math.prod(layer.rows) >= 100
    assert summary["entities"] == 100 and summary["users"] == 40 and summary["dim"] == 12
    assert "buckets" not in summary


@pytest.mark.parametrize("budget", [1, 10, 50])
def test_a_too_small_budget_is_a_config_error_naming_budget(budget):
    with pytest.raises(ConfigError) as error:
        TTLayer.create(LayerSize(1000, 16, 0, budget=budget))
    assert error.value.field == "budget"
    assert "budget" in str(error.value) and "rank 1" in str(error.value)


def test_a_layer_without_a_budget_is_a_config_error():
    with pytest.raises(ConfigError) as error:
        TTLayer.create(LayerSize(100, 16, 0))
    assert error.value.field == "budget"


def test_numpy_arrays_from_a_file_are_accepted():
    layer = small_layer()
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in layer.arrays().items()}
    assert torch.equal(TTLayer.from_arrays(arrays, layer.header(), 50)(), layer())


def test_a_too_small_budget_is_a_clean_cli_error_that_changes_nothing(tmp_path, prepared_run):
    run_dir = copy_run(prepared_run, tmp_path / "run")
    before = snapshot(run_dir)
    result = invoke(
        "pretrain", run_dir, "--embedding", "tt", "--budget", "30", "--dim", "16", "--device", "cpu"
    )
    assert_clean_error(result, "--budget", "rank 1")
    assert snapshot(run_dir) == before
