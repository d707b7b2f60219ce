"""Integers in as few bits as they need: round trips, the choice of form, and hostile layouts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from legcf_core import artifacts as art
from legcf_core.errors import ArtifactError
from legcf_core.packing import (
    CHUNK,
    PackingError,
    bits_needed,
    narrow_uints,
    pack_bits,
    read_uints,
    unpack_bits,
)


@pytest.mark.parametrize("bits", [1, 3, 8, 9, 13, 31, 40])
@pytest.mark.parametrize("count", [0, 1, 7, 64, 1000])
def test_pack_round_trip(bits, count):
    values = np.random.default_rng(bits * 1000 + count).integers(0, 1 << bits, size=count)
    packed = pack_bits(values, bits)
    assert packed.dtype == np.uint8 and packed.size == (count * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, bits, count), values)


def test_chunks_join_into_one_stream():
    values = np.random.default_rng(0).integers(0, 1 << 9, size=CHUNK + 123)
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, 9), 9, values.size), values)


def test_the_form_follows_the_largest_value():
    rng = np.random.default_rng(1)
    assert bits_needed(0) == 1 and bits_needed(499) == 9 and bits_needed(512) == 10
    byte_wide = narrow_uints("a", rng.integers(0, 256, size=1000))
    assert byte_wide["a"].dtype == np.uint8  # 8 bits: a uint8 wastes nothing
    codes = rng.integers(0, 500, size=(1000, 2))
    stored = narrow_uints("codes", codes)
    assert set(stored) == {"codes.packed", "codes.layout"} and stored["codes.packed"].size == 2250
    np.testing.assert_array_equal(read_uints(stored, "codes", (1000, 2), upper=499), codes)
    assert narrow_uints("few", np.arange(10))["few"].dtype == np.uint8  # too few to be worth packing


def test_hostile_layouts_are_refused():
    stored = narrow_uints("x", np.random.default_rng(2).integers(0, 500, size=100))
    cases = {
        "bits out of range": {**stored, "x.layout": np.asarray([0, 100], np.int64)},
        "a huge shape": {**stored, "x.layout": np.asarray([9, 1 << 62, 1 << 62], np.int64)},
        "too few bytes": {**stored, "x.packed": stored["x.packed"][:-1]},
        "a float layout": {**stored, "x.layout": np.asarray([9.0, 100.0])},
        "no layout": {"x.packed": stored["x.packed"]},
    }
    for what, tensors in cases.items():
        with pytest.raises(PackingError):
            read_uints(tensors, "x", (None,))
        assert what
    with pytest.raises(PackingError, match="outside 0..98"):
        read_uints(stored, "x", (100,), upper=98)
    with pytest.raises(PackingError, match="expected integers"):
        read_uints({"x": np.zeros(3, np.float32)}, "x", (3,))


def test_a_narrow_csr_with_counts_that_do_not_add_up_names_the_array(tmp_path):
    matrix = sp.random(300, 700, density=0.05, random_state=3, format="csr", dtype=np.float32)
    arrays = art.csr_arrays("g", matrix, with_data=False, narrow=True)
    assert arrays["g.indices.layout"][0] == 10  # 700 columns: 10 bits, not 16
    counts = read_uints(arrays, "g.counts", (300,))
    counts[0] += 1
    broken = {k: v for k, v in arrays.items() if not k.startswith("g.counts")}
    broken["g.counts"] = counts.astype(np.uint16)
    path = tmp_path / "m.safetensors"
    refused = pytest.raises(ArtifactError, match=r"m.safetensors is malformed: tensor 'g.counts' must sum")
    with refused, art.checked(path):
        art.csr_from_arrays("g", broken)
