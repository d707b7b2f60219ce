"""Fuzzing the loaders through the CLI: random bytes, random safetensors, a real export
corrupted one array or header field at a time, random manifests, random dataset lines.

The only outcomes allowed are success, or exit 1 with exactly one ``error:`` line and
no traceback; never a signal, never exit 0 with metrics over 0 users.

In CI each test runs a few dozen seeded examples (the suite stays fast). For a long run,
``LEGCF_FUZZ_EXAMPLES=4000 pytest tests/test_fuzz.py`` gives every test that many
examples; ``LEGCF_FUZZ_SEED`` picks another seed (docs/reliability.md reports one run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import string
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import SEED as SEED_OF_TRAINED_RUN
from helpers import assert_clean_error, copy_run, invoke, read_manifest, tensor_file
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import legcf_core
from legcf_core import artifacts as art
from legcf_core.data import load_dataset
from legcf_core.errors import LegcfError
from legcf_core.manifest import check_manifest

LONG = int(os.environ.get("LEGCF_FUZZ_EXAMPLES", "0"))
SEED = int(os.environ.get("LEGCF_FUZZ_SEED", "2024"))
OUTCOMES: dict[str, dict[str, int]] = {}  # per test: successes and clean errors (for the long run)
KINDS: dict[str, dict[str, int]] = {}  # per test: how often each kind of error line came


def fuzz(examples: int):
    """Seeded, bounded hypothesis settings; LEGCF_FUZZ_EXAMPLES overrides the count."""

    def wrap(test):
        configured = settings(
            max_examples=LONG or examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )(test)
        return seed(SEED)(configured)

    return wrap


def outcome(result, name: str) -> str:
    """Success, or a clean error (exit 1, one error line, no traceback); tallied by test."""
    tally = OUTCOMES.setdefault(name, {"ok": 0, "error": 0})
    if result.exit_code == 0:
        tally["ok"] += 1
        return "ok"
    assert result.exit_code == 1, (result.exit_code, result.exception)
    line = assert_clean_error(result)
    tally["error"] += 1
    kind = re.sub(r"\S*/\S*", "PATH", line.removeprefix("error: "))
    kind = re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'X'", kind))[:70]
    kinds = KINDS.setdefault(name, {})
    kinds[kind] = kinds.get(kind, 0) + 1
    return "error"


@pytest.fixture(scope="module", autouse=True)
def report_outcomes():
    yield
    if LONG:
        report = {"examples": LONG, "seed": SEED, "outcomes": OUTCOMES, "error_kinds": KINDS}
        text = json.dumps(report, sort_keys=True, indent=1)
        Path(os.environ.get("LEGCF_FUZZ_REPORT", "fuzz-report.json")).write_text(text + "\n")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------- model files

HEADER_KEYS = (
    "format", "format_version", "kind", "dataset", "n_users", "n_items", "params", "made_by", "embedding",
    "backbone", "dim", "layers", "seed", "codebook_size", "per_entity", "budget", "remainders", "quotients",
    "kept",
)  # fmt: skip
TENSOR_NAMES = (
    "codebook", "assignment.indptr", "assignment.indices", "assignment.data", "assignment.shape",
    "train.indptr", "train.indices", "train.shape", "user_ids", "item_ids", "weight", "quotient",
    "remainder", "values", "pattern.indptr", "pattern.indices", "pattern.shape", "backbone.w1.0",
)  # fmt: skip
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
small_ints = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**63 - 1, -(2**63), 10**9]))
header_values = st.one_of(
    small_ints.map(str),
    st.sampled_from(["legcf", "1", "export", "refine", "pretrain", "full", "qr", "pep", "ngcf", "lrgccf"]),
    st.text(max_size=12),
)


@st.composite
def arrays(draw, dtype=None, max_side: int = 12):
    dtype = dtype or draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=0, max_size=3)))
    size = int(np.prod(shape)) if shape else 1
    if dtype == "bool":
        values = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    elif dtype.startswith("float"):
        values = draw(st.lists(st.floats(width=16, allow_nan=True), min_size=size, max_size=size))
    else:
        info = np.iinfo(dtype)
        values = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=size, max_size=size))
    return np.asarray(values, dtype=dtype).reshape(shape)


@st.composite
def legcf_headers(draw):
    """An export's header with plausible fields (so checks get past the header), then up to
    a dozen fields overwritten with random values."""
    meta = {
        "format": "legcf",
        "format_version": "1",
        "kind": "export",
        "n_users": str(draw(st.integers(1, 6))),
        "n_items": str(draw(st.integers(1, 6))),
        "made_by": draw(st.sampled_from(["pretrain", "refine"])),
        "embedding": draw(st.sampled_from(["legcf", "full", "qr", "pep"])),
        "backbone": draw(st.sampled_from(["lightgcn", "ngcf", "lrgccf"])),
        "dim": str(draw(st.integers(1, 4))),
        "layers": str(draw(st.integers(0, 2))),
    }
    meta.update(draw(st.dictionaries(st.sampled_from(HEADER_KEYS), header_values, max_size=12)))
    return meta


def inspect_file(path: Path, name: str) -> None:
    result = invoke("inspect", path)
    if outcome(result, name) == "ok":
        assert "users" in result.stdout
    with contextlib.suppress(LegcfError):
        legcf_core.load(path)


@st.composite
def framed(draw):
    """Bytes that start like safetensors: a length, then a header that may or may not be JSON."""
    head = draw(st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode)))
    if draw(st.booleans()):
        head = json.dumps(
            draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
        ).encode()
    length = draw(st.one_of(st.just(len(head)), st.integers(0, 2**64 - 1)))
    return struct.pack("<Q", length) + head + draw(st.binary(max_size=64))


@fuzz(40)
@given(blob=st.one_of(st.binary(max_size=300), framed()))
def test_random_bytes_as_a_model_file(scratch, blob):
    path = scratch / "bytes.safetensors"
    path.write_bytes(blob)
    inspect_file(path, "random bytes")


@fuzz(40)
@given(
    tensors=st.dictionaries(st.sampled_from(TENSOR_NAMES), arrays(), max_size=8),
    meta=legcf_headers(),
)
def test_random_safetensors_as_a_model_file(scratch, tensors, meta):
    users, items = (int(meta[k]) if meta.get(k, "").isdigit() else 3 for k in ("n_users", "n_items"))
    if len(tensors) % 2 and users * items < 100:  # often give the graph and ids right, to reach the layer
        train = sp.random(users, items, density=0.5, format="csr", random_state=len(tensors))
        tensors = {
            **art.csr_arrays("train", train, with_data=False),
            "user_ids": np.arange(users, dtype=np.int64),
            "item_ids": np.arange(items, dtype=np.int64),
            **tensors,
        }
    path = scratch / "random.safetensors"
    path.write_bytes(art.serialize_tensors(tensors, meta))
    inspect_file(path, "random safetensors")


MUTATIONS = ("element", "dtype", "truncate", "flatten", "drop", "extend", "swap")


@st.composite
def corruptions(draw, tensors: dict, meta: dict):
    """One array or one header field of a real export, changed."""
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(meta)))
        value = draw(st.one_of(st.none(), header_values))
        return ("header", key, value)
    name = draw(st.sampled_from(sorted(tensors)))
    mutation = draw(st.sampled_from(MUTATIONS))
    index = draw(st.integers(0, 10**6))
    value = draw(st.one_of(small_ints, st.floats(allow_nan=True, width=32)))
    other = draw(st.sampled_from(sorted(tensors)))
    dtype = draw(st.sampled_from(DTYPES))
    return ("tensor", name, mutation, index, value, other, dtype)


def _out_of_range(dtype: np.dtype):
    """A value no valid array holds: -1 for signed integers, the largest for unsigned, else NaN."""
    if np.issubdtype(dtype, np.signedinteger):
        return -1
    return np.iinfo(dtype).max if np.issubdtype(dtype, np.unsignedinteger) else np.nan


def apply(corruption, tensors: dict, meta: dict) -> None:
    if corruption[0] == "header":
        _, key, value = corruption
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
        return
    _, name, mutation, index, value, other, dtype = corruption
    array = tensors[name].copy()
    if mutation == "element" and array.size:
        flat = array.reshape(-1)
        try:
            flat[index % flat.size] = value
        except (OverflowError, ValueError):
            flat[index % flat.size] = _out_of_range(array.dtype)
    elif mutation == "dtype":
        array = array.astype(dtype)
    elif mutation == "truncate":
        array = array.reshape(-1)[: index % (array.size + 1)]
    elif mutation == "flatten":
        array = array.reshape(-1)
    elif mutation == "drop":
        tensors.pop(name)
        return
    elif mutation == "extend":
        array = np.concatenate([array.reshape(-1), array.reshape(-1)[:1]])
    elif mutation == "swap":
        array = tensors[other].copy()
    tensors[name] = array


@pytest.fixture(scope="module")
def export_parts(exported_model):
    return tensor_file(exported_model)


@fuzz(40)
@given(data=st.data())
def test_a_real_export_corrupted_one_part_at_a_time(scratch, export_parts, data):
    tensors, meta = ({k: v.copy() for k, v in export_parts[0].items()}, dict(export_parts[1]))
    corruption = data.draw(corruptions(tensors, meta))
    apply(corruption, tensors, meta)
    path = scratch / "corrupted.safetensors"
    path.write_bytes(art.serialize_tensors(tensors, meta))
    inspect_file(path, "corrupted export")


# ---------------------------------------------------------------- manifests

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def manifests(draw, real: dict):
    """A real manifest with one to three nodes replaced or removed, or random JSON."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    manifest = json.loads(json.dumps(real))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(manifest) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return manifest


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory, trained_run):
    run_dir = copy_run(trained_run, tmp_path_factory.mktemp("fuzz_run") / "run")
    return run_dir, read_manifest(run_dir)


@fuzz(30)
@given(data=st.data())
def test_random_manifests(fuzz_run, demo_path, data):
    run_dir, real = fuzz_run
    manifest = data.draw(manifests(real))
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    command = data.draw(st.sampled_from(["evaluate", "inspect", "prepare"]))
    extra = {
        "evaluate": ["--json", "--device", "cpu"],
        "inspect": ["--json"],
        "prepare": ["--data", demo_path, "--seed", SEED_OF_TRAINED_RUN],  # the same data file again
    }[command]
    result = invoke(command, run_dir, *extra)
    if outcome(result, "random manifest") == "ok":
        if command == "evaluate":
            assert json.loads(result.stdout)["users"] > 0
        if command == "prepare":  # a malformed manifest was set aside; the new one is sound
            check_manifest(read_manifest(run_dir))


# ------------------------------------------------------------ dataset lines

tokens = st.one_of(
    st.integers(0, 60).map(str),
    st.sampled_from(
        ["-1", "+3", "1_000", "١٢", "１", "1.0", "1e3", "", " ", "\ufeff7", "9" * 25, "0x10", "user"]
    ),
    st.text(alphabet=string.printable, max_size=4),
)
separators = st.sampled_from([",", "\t", " ", ";", ", "])


@st.composite
def dataset_files(draw):
    """A file of id pairs or LightGCN rows (few ids, so users often have enough items to
    split), with bad tokens, separators, headers and byte order marks mixed into some."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".txt"]))
    ids = st.integers(0, 25).map(str)
    noisy = draw(st.integers(0, 2)) == 0
    token = tokens if noisy else ids
    sep = "\t" if suffix == ".tsv" else ("," if suffix == ".csv" else " ")
    lines = []
    if suffix != ".txt" and draw(st.booleans()):
        lines.append(draw(st.sampled_from(["user,item", "u\ti", "user_id,item_id,rating"])))
    for _ in range(draw(st.integers(0, 60))):
        width = (1, 2) if suffix != ".txt" else (1, 12)
        row = [draw(ids if not noisy else token)] + draw(
            st.lists(token, min_size=width[0], max_size=width[1])
        )
        lines.append((draw(separators) if noisy else sep).join(row))
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))
    bom = b"\xef\xbb\xbf" if draw(st.integers(0, 4)) == 0 else b""
    return suffix, bom + text.encode("utf-8", "surrogatepass")


@fuzz(40)
@given(file=dataset_files(), test_fraction=st.sampled_from([0.2, 0.5]))
def test_random_dataset_lines(file, test_fraction):
    suffix, blob = file
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / f"data{suffix}"
        path.write_bytes(blob)
        try:
            data = load_dataset(path, test_fraction=test_fraction, seed=1)
            assert data.valid.nnz > 0 and data.test.nnz > 0
        except LegcfError:
            pass
        result = invoke("prepare", Path(work) / "run", "--data", path, "--test-fraction", test_fraction)
        if outcome(result, "random dataset") == "ok":
            manifest = read_manifest(Path(work) / "run")
            assert manifest["dataset"]["valid"] > 0 and manifest["dataset"]["test"] > 0
