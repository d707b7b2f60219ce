"""Dataset readers, id maps, the holdout and validation splits, input validation."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import write_lightgcn, write_pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from legcf_core.data import holdout_split, load_dataset, split_validation
from legcf_core.errors import DataError

TRAIN = {10: [100, 101, 102], 20: [101, 103], 35: [100, 104, 105, 106]}
# Item 900 appears only in test; (20, 103) repeats a training pair.
TEST = {10: [103, 104, 900], 20: [100, 103], 35: [101]}


def raw_pairs(data, matrix: sp.csr_matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return {(int(data.user_ids[r]), int(data.item_ids[c])) for r, c in zip(coo.row, coo.col, strict=True)}


def flat(rows: dict[int, list[int]]) -> set[tuple[int, int]]:
    return {(u, i) for u, items in rows.items() for i in items}


def check_toy(data) -> None:
    assert data.user_ids.tolist() == [10, 20, 35]
    assert data.item_ids.tolist() == [100, 101, 102, 103, 104, 105, 106, 900]
    assert (data.n_users, data.n_items, data.n_entities) == (3, 8, 11)
    assert raw_pairs(data, data.train) == flat(TRAIN)
    held = raw_pairs(data, data.valid) | raw_pairs(data, data.test)
    assert held == flat(TEST) - flat(TRAIN)  # (20, 103) was seen in training: not held out
    assert not raw_pairs(data, data.valid) & raw_pairs(data, data.test)
    for matrix in (data.train, data.valid, data.test):
        assert matrix.shape == (3, 8)
        assert set(np.unique(matrix.data).tolist()) <= {1.0}


def test_lightgcn_text(tmp_path):
    write_lightgcn(tmp_path / "train.txt", TRAIN)
    write_lightgcn(tmp_path / "test.txt", TEST)
    check_toy(load_dataset(tmp_path, seed=1))


def test_item_only_in_test_gets_an_index(tmp_path):
    write_lightgcn(tmp_path / "train.txt", TRAIN)
    write_lightgcn(tmp_path / "test.txt", TEST)
    data = load_dataset(tmp_path, seed=1)
    index = int(np.flatnonzero(data.item_ids == 900)[0])
    assert data.train[:, index].nnz == 0
    assert (data.valid + data.test)[:, index].nnz == 1


def test_csv_with_header(tmp_path):
    write_pairs(tmp_path / "train.csv", sorted(flat(TRAIN)), header="user_id,item_id")
    write_pairs(tmp_path / "test.csv", sorted(flat(TEST)), header="user_id,item_id")
    check_toy(load_dataset(tmp_path, seed=1))


def test_csv_without_header_and_extra_columns(tmp_path):
    (tmp_path / "train.csv").write_text("".join(f"{u},{i},5,1700000000\n" for u, i in sorted(flat(TRAIN))))
    write_pairs(tmp_path / "test.csv", sorted(flat(TEST)))
    check_toy(load_dataset(tmp_path, seed=1))


def test_tsv(tmp_path):
    write_pairs(tmp_path / "train.tsv", sorted(flat(TRAIN)), sep="\t", header="user\titem")
    write_pairs(tmp_path / "test.tsv", sorted(flat(TEST)), sep="\t")
    check_toy(load_dataset(tmp_path, seed=1))


def test_mixed_formats_and_duplicates(tmp_path):
    pairs = sorted(flat(TRAIN))
    write_pairs(tmp_path / "train.csv", pairs + pairs[:3])  # duplicates merge into one entry
    write_lightgcn(tmp_path / "test.txt", TEST)
    data = load_dataset(tmp_path, seed=1)
    check_toy(data)
    assert data.train.nnz == len(pairs)


def test_same_seed_same_split_different_seed_differs(tmp_path):
    rng = np.random.default_rng(0)
    train = {u: rng.choice(200, size=5, replace=False).tolist() for u in range(30)}
    test = {u: (200 + rng.choice(100, size=9, replace=False)).tolist() for u in range(30)}
    write_lightgcn(tmp_path / "train.txt", train)
    write_lightgcn(tmp_path / "test.txt", test)
    a, b = load_dataset(tmp_path, seed=5), load_dataset(tmp_path, seed=5)
    assert (a.valid != b.valid).nnz == 0 and (a.test != b.test).nnz == 0
    others = [load_dataset(tmp_path, seed=s) for s in (6, 7, 8)]
    assert any((a.valid != o.valid).nnz > 0 for o in others)
    for data in [a, *others]:
        # ceil(9 / 3) = 3 validation items per user, the other 6 stay in test.
        assert np.all(np.diff(data.valid.indptr) == 3)
        assert np.all(np.diff(data.test.indptr) == 6)


def test_single_file_holdout(tmp_path):
    rng = np.random.default_rng(1)
    counts = {u: int(rng.integers(1, 15)) for u in range(25)}
    pairs = [(u, int(i)) for u, n in counts.items() for i in rng.choice(60, size=n, replace=False)]
    write_pairs(tmp_path / "all.csv", pairs, header="user,item")
    data = load_dataset(tmp_path / "all.csv", test_fraction=0.3, seed=4)
    assert raw_pairs(data, data.train) | raw_pairs(data, data.valid) | raw_pairs(data, data.test) == set(
        pairs
    )
    held = np.diff((data.valid + data.test).indptr)
    for row, user in enumerate(data.user_ids):
        assert held[row] == math.floor(0.3 * counts[int(user)])
    again = load_dataset(tmp_path / "all.csv", test_fraction=0.3, seed=4)
    assert (again.train != data.train).nnz == 0


# ---------------------------------------------------------------- errors


def test_missing_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope.csv")
    write_lightgcn(tmp_path / "train.txt", TRAIN)
    with pytest.raises(DataError, match="test"):
        load_dataset(tmp_path)  # no test file


@pytest.mark.parametrize("token", ["x", "-3", "2.5"])
def test_a_non_integer_lightgcn_id_makes_the_items_tokens(tmp_path, token):
    """Ids are tokens (issue #13): what was once 'not an integer' is read as text, and a note
    names the id that made a column of numbers text, in case it is a typo."""
    write_lightgcn(tmp_path / "train.txt", ["0 1 2", f"1 2 {token}", "2 1 2 3"])
    write_lightgcn(tmp_path / "test.txt", {0: [3], 1: [1, 3], 2: [4]})
    data = load_dataset(tmp_path)
    assert data.user_ids.tolist() == [0, 1, 2]  # the users stay integers
    assert data.item_ids.tolist() == sorted(["1", "2", "3", "4", token])
    assert data.notes == (f"item ids are read as text tokens: {token!r} is not a plain non-negative integer",)


@pytest.mark.parametrize(
    ("row", "needle"),
    [("7", "expected user and item fields, got 1 in '7'"), ("3,", "the item id ('item') is empty")],
)
def test_malformed_csv_row(tmp_path, row, needle):
    (tmp_path / "data.csv").write_text(f"user,item\n1,2\n{row}\n")
    with pytest.raises(DataError, match=re.escape(needle)) as info:
        load_dataset(tmp_path / "data.csv")
    assert "data.csv:3" in str(info.value)  # names the file and line


def test_empty_dataset(tmp_path):
    (tmp_path / "train.txt").write_text("")
    (tmp_path / "test.txt").write_text("")
    with pytest.raises(DataError, match="no training interactions"):
        load_dataset(tmp_path)
    (tmp_path / "only_header.csv").write_text("user,item\n")
    with pytest.raises(DataError, match="no training interactions"):
        load_dataset(tmp_path / "only_header.csv")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_bad_test_fraction(tmp_path, fraction):
    write_pairs(tmp_path / "all.csv", [(0, 1), (0, 2)])
    with pytest.raises(DataError, match="test fraction"):
        load_dataset(tmp_path / "all.csv", test_fraction=fraction)


def test_non_utf8_file_is_a_data_error(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"0 1 2\n1 \xff\xfe 3\n")
    write_lightgcn(tmp_path / "test.txt", {0: [3]})
    with pytest.raises(DataError):
        load_dataset(tmp_path)


def test_an_id_beyond_int64_is_a_token(tmp_path):
    write_lightgcn(tmp_path / "train.txt", ["0 1 2", "1 99999999999999999999999 3", "2 1 2"])
    write_lightgcn(tmp_path / "test.txt", {0: [3], 1: [1, 2], 2: [3]})
    assert "99999999999999999999999" in load_dataset(tmp_path).item_ids.tolist()


# ------------------------------------------------------- split properties


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 12), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_validation_split(sizes, seed):
    n_items = 15
    rng = np.random.default_rng(len(sizes))
    dense = np.zeros((len(sizes), n_items), dtype=np.float32)
    for user, size in enumerate(sizes):
        dense[user, rng.choice(n_items, size=size, replace=False)] = 1
    held = sp.csr_matrix(dense)
    valid, test = split_validation(held, seed)
    assert valid.shape == test.shape == held.shape
    np.testing.assert_array_equal(np.diff(valid.indptr), [math.ceil(s / 3) for s in sizes])
    assert valid.multiply(test).nnz == 0
    np.testing.assert_array_equal((valid + test).toarray(), dense)
    v2, t2 = split_validation(held, seed)
    assert (v2 != valid).nnz == 0 and (t2 != test).nnz == 0


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 10), min_size=1, max_size=6),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_holdout_split(sizes, fraction, seed):
    users = np.repeat(np.arange(len(sizes)) * 3 + 1, sizes)  # raw ids, not contiguous
    items = np.concatenate([np.arange(s) * 7 for s in sizes])
    tu, ti, eu, ei = holdout_split(users, items, fraction, seed)
    train = set(zip(tu.tolist(), ti.tolist(), strict=True))
    test = set(zip(eu.tolist(), ei.tolist(), strict=True))
    assert not train & test
    assert train | test == set(zip(users.tolist(), items.tolist(), strict=True))
    for index, size in enumerate(sizes):
        assert int((eu == index * 3 + 1).sum()) == math.floor(fraction * size)
    again = holdout_split(users, items, fraction, seed)
    assert all(np.array_equal(x, y) for x, y in zip(again, (tu, ti, eu, ei), strict=True))


# ------------------------------------------- duplicates, ids, BOM, empty splits


def test_duplicates_are_collapsed_before_the_holdout(tmp_path):
    """Every pair twice used to give test = 0: the copy of a held-out pair stayed in train."""
    pairs = [(u, 100 + i) for u in range(6) for i in range(10)]
    once = load_dataset(write_pairs(tmp_path / "once.csv", pairs), seed=3)
    twice = load_dataset(write_pairs(tmp_path / "twice.csv", [p for p in pairs for _ in range(2)]), seed=3)
    assert (once.duplicates, twice.duplicates) == (0, len(pairs))
    assert twice.test.nnz > 0
    assert raw_pairs(twice, twice.test) == raw_pairs(once, once.test)  # the first copy keeps its place
    assert not raw_pairs(twice, twice.train) & (raw_pairs(twice, twice.valid) | raw_pairs(twice, twice.test))


def test_duplicates_are_counted_in_prepare(tmp_path):
    from helpers import invoke_ok, read_manifest

    write_lightgcn(tmp_path / "d" / "train.txt", ["0 1 2 2 3", "1 2 3 4", "1 4"])
    write_lightgcn(tmp_path / "d" / "test.txt", ["0 4 5 5", "1 5"])
    result = invoke_ok("prepare", tmp_path / "run", "--data", tmp_path / "d")
    assert "duplicates" in result.stdout
    manifest = read_manifest(tmp_path / "run")
    assert manifest["stages"]["prepare"]["metrics"]["duplicates"] == 3
    assert manifest["dataset"]["duplicates"] == 3


@pytest.mark.parametrize("token", ["1_000", "١٢", "１２", "12.0", "0x1f", "1e3", "+3", "007x"])
def test_only_ascii_digits_make_integer_ids(tmp_path, token):
    """Anything but plain ASCII digits is a token, kept exactly as written."""
    pairs = [(u, i) for u in range(3) for i in range(1, 6)]
    path = write_pairs(tmp_path / "all.csv", pairs)
    path.write_text(path.read_text() + f"2,{token}\n", encoding="utf-8")
    data = load_dataset(path, test_fraction=0.5)
    assert data.user_ids.tolist() == [0, 1, 2]
    assert data.item_ids.tolist() == sorted(["1", "2", "3", "4", "5", token])
    assert token in data.notes[0]


def test_a_blank_id_is_one_error_naming_its_line(tmp_path):
    path = write_pairs(tmp_path / "all.csv", [(0, 1), (0, 2), (1, 1)])
    path.write_text(path.read_text() + "2, \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"all\.csv:4: the item id \(column 1\) is empty"):
        load_dataset(path)


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_a_byte_order_mark_is_ignored(tmp_path, suffix):
    rows = [(u, i) for u in range(4) for i in range(12)]
    plain, marked = tmp_path / f"plain{suffix}", tmp_path / f"marked{suffix}"
    if suffix == ".csv":
        write_pairs(plain, rows)  # no header: the BOM sits before the first id
    else:
        write_lightgcn(plain, {u: list(range(12)) for u in range(4)})
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    a, b = load_dataset(plain, test_fraction=0.5), load_dataset(marked, test_fraction=0.5)
    assert a.user_ids.tolist() == b.user_ids.tolist() == [0, 1, 2, 3]
    assert (a.test != b.test).nnz == 0


def test_empty_test_split_says_why(tmp_path):
    few = write_pairs(tmp_path / "few.csv", [(u, i) for u in range(5) for i in range(4)])
    with pytest.raises(DataError, match="empty test split.*at least 5 distinct items"):
        load_dataset(few, test_fraction=0.2)
    one_each = write_pairs(tmp_path / "one.csv", [(u, i) for u in range(5) for i in range(5)])
    with pytest.raises(
        DataError, match="empty test split: --validation test-third takes ceil.*--validation train-fraction"
    ):
        load_dataset(one_each, test_fraction=0.2)
    write_lightgcn(tmp_path / "d" / "train.txt", {0: [1, 2], 1: [2, 3]})
    write_lightgcn(tmp_path / "d" / "test.txt", {0: [1], 1: [3]})
    with pytest.raises(DataError, match="also in the train file"):
        load_dataset(tmp_path / "d")


def test_prepare_refuses_an_empty_split_and_writes_nothing(tmp_path):
    from helpers import assert_clean_error, invoke

    data = write_pairs(tmp_path / "twice.csv", [(u, i) for u in range(5) for i in range(3)] * 2)
    assert_clean_error(invoke("prepare", tmp_path / "run", "--data", data), "empty test split")
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_an_empty_split(tmp_path, trained_run):
    """A data file written before empty splits were refused: evaluate says so, no 0 users."""
    from helpers import assert_clean_error, copy_run, invoke, rewrite_tensors, tensor_file

    run_dir = copy_run(trained_run, tmp_path / "run")
    tensors, meta = tensor_file(run_dir / "data.safetensors")
    tensors["test.indptr"] = np.zeros_like(tensors["test.indptr"])
    tensors["test.indices"] = tensors["test.indices"][:0]
    rewrite_tensors(run_dir / "data.safetensors", tensors, meta)
    assert_clean_error(invoke("evaluate", run_dir, "--model", "refine"), "test split", "empty")
