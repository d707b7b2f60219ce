"""Every reader on real files written here: formats, headers, delimiters, quoting, column
choice, ratings, and the one-line errors for bad input (issue #13)."""

from __future__ import annotations

import csv
import re
import string
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_clean_error, invoke, invoke_ok, read_manifest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from legcf_core.data import load_dataset
from legcf_core.errors import DataError
from legcf_core.readers import Columns, read_table
from legcf_core.readers.dataset import read_coded
from legcf_core.readers.delimited import dialect
from legcf_core.readers.ids import code_columns

pa = pytest.importorskip("pyarrow")


def ids(column) -> list:
    return column.to_pylist()


def rows(users: int = 6, items: int = 9) -> list[tuple[str, str, int, int]]:
    """Every user with every item, a rating 1..5 and a time: enough to split."""
    return [
        (f"u{u}", f"i{i}", 1 + (u + i) % 5, 1000 + u * items + i) for u in range(users) for i in range(items)
    ]


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_text(newline.join(lines) + newline, encoding="utf-8")
    return path


# ------------------------------------------------------------------ CSV and TSV


def test_csv_with_quotes_semicolons_and_a_header(tmp_path):
    path = write(tmp_path / "a.csv", ['"user";"item";"rating"', '"u 1";"i;1";5', '"u 2";"i""2";3'])
    table = read_table(path)
    assert ids(table.users) == ["u 1", "u 2"]
    assert ids(table.items) == ["i;1", 'i"2']  # a delimiter and a doubled quote inside quotes
    assert table.ratings.tolist() == [5.0, 3.0]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_sniffed(tmp_path, delimiter):
    path = write(tmp_path / "a.csv", [delimiter.join(f) for f in [("u1", "i1"), ("u1", "i2"), ("u2", "i1")]])
    table = read_table(path)
    assert ids(table.users) == ["u1", "u1", "u2"] and ids(table.items) == ["i1", "i2", "i1"]


def test_string_ids_without_a_header_keep_their_first_row(tmp_path):
    table = read_table(write(tmp_path / "a.csv", ["u0,i12", "u1,i3"]))
    assert ids(table.users) == ["u0", "u1"]


@pytest.mark.parametrize(
    ("first", "header"),
    [("user_id,item_id", True), ("customer,product", True), ("a,b", True), ("7,8", False)],
)
def test_a_header_is_detected(tmp_path, first, header):
    """A known name, or text above numbers, is a header; numbers are data."""
    table = read_table(write(tmp_path / "a.csv", [first, "1,2", "3,4"]))
    assert table.rows == (2 if header else 3)


def test_columns_by_name_and_by_index(tmp_path):
    path = write(tmp_path / "a.csv", ["when,stars,buyer,thing", "5,4,b1,t1", "6,2,b2,t2"])
    table = read_table(path, Columns(user="buyer", item=3, rating="stars", time=0))
    assert ids(table.users) == ["b1", "b2"] and ids(table.items) == ["t1", "t2"]
    assert table.ratings.tolist() == [4.0, 2.0] and table.times.tolist() == [5.0, 6.0]


def test_known_header_names_choose_the_columns(tmp_path):
    path = write(tmp_path / "a.csv", ["timestamp,item_id,rating,user_id", "9,i1,4,u1"])
    table = read_table(path)
    assert (ids(table.users), ids(table.items), table.ratings.tolist(), table.times.tolist()) == (
        ["u1"],
        ["i1"],
        [4.0],
        [9.0],
    )


def test_tsv_with_a_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_bytes(b"\xef\xbb\xbfuser\titem\r\nu1\ti1\r\n\r\nu2\t i2 \r\n")
    table = read_table(path)
    assert ids(table.users) == ["u1", "u2"] and ids(table.items) == ["i1", "i2"]  # spaces trimmed


# ------------------------------------------------------------ the other formats


def test_movielens_ratings_dat(tmp_path):
    path = write(tmp_path / "ratings.dat", ["1::1193::5::978300760", "1::661::3::978302109", "2::1193::4::9"])
    table = read_table(path)
    assert ids(table.users) == ["1", "1", "2"] and ids(table.items) == ["1193", "661", "1193"]
    assert table.ratings.tolist() == [5, 3, 4] and table.times.tolist() == [978300760, 978302109, 9]


@pytest.mark.parametrize(
    ("line", "needle"),
    [("1::2::x::4", "the rating ('rating') 'x' is not a number"), ("1:2::3::4", "got 3"),
     ("1::2::3", "expected 4 fields, got 3")],
)  # fmt: skip
def test_a_bad_ratings_dat_line_is_named(tmp_path, line, needle):
    path = write(tmp_path / "ratings.dat", ["1::2::3::4", line])
    with pytest.raises(DataError, match=re.escape(needle)) as info:
        read_table(path)
    assert "ratings.dat:2" in str(info.value)


def test_recbole_inter(tmp_path):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\treview:token_seq"
    path = write(tmp_path / "ml.inter", [header, "u1\ti1\t4\t10\tgood film", "u2\ti1\t2\t11\tmeh"])
    table = read_table(path)
    assert ids(table.users) == ["u1", "u2"] and table.ratings.tolist() == [4.0, 2.0]
    assert table.times.tolist() == [10.0, 11.0]


def test_recbole_header_must_be_typed(tmp_path):
    path = write(tmp_path / "ml.inter", ["user_id\titem_id", "u1\ti1"])
    with pytest.raises(DataError, match=r"ml\.inter:1: header field 'user_id' is not 'name:type'"):
        read_table(path)


def test_parquet_with_string_and_integer_ids(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"user_id": [5, 5, 7], "item": ["a", "b", "a"], "rating": [1.0, 5.0, 4.0]}), path)
    table = read_table(path)
    assert ids(table.users) == [5, 5, 7] and ids(table.items) == ["a", "b", "a"]
    assert code_columns([table.users], "user").tokens is None  # integer ids stay integers
    with pytest.raises(DataError, match="no column 'who'"):
        read_table(path, Columns(user="who"))
    stamps = pa.array([0, 60, 120], pa.timestamp("s"))
    pq.write_table(pa.table({"user": ["a", "a", "b"], "item": ["x", "y", "x"], "timestamp": stamps}), path)
    assert read_table(path).times.tolist() == [0.0, 60.0, 120.0]  # a timestamp column is a time


def test_an_unknown_suffix_lists_the_formats(tmp_path):
    path = write(tmp_path / "data.json", ['{"user": 1}'])
    with pytest.raises(DataError, match=r"unknown file type '\.json'; legcf reads \.txt .*\.csv.*\.parquet"):
        read_table(path)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (["user,item", "1,2", "3,4,5"], r"a\.csv:3: expected 2 fields, got 3"),
        (["user,item,rating", "1,2,5", "3,4,x"], r"a\.csv:3: the rating \('rating'\) 'x' is not a number"),
        (["user,item,rating", "1,2,5", "3,4,"], r"a\.csv:3: the rating"),
        (["user,item", "1,2", ",4"], r"a\.csv:3: the user id \('user'\) is empty"),
    ],
)
def test_bad_rows_are_one_error_naming_the_line(tmp_path, lines, needle):
    with pytest.raises(DataError, match=needle):
        read_table(write(tmp_path / "a.csv", lines))


def test_binary_garbage_and_missing_columns_are_clean_cli_errors(tmp_path):
    garbage = tmp_path / "g.csv"
    garbage.write_bytes(bytes(range(256)) * 8)
    assert_clean_error(invoke("prepare", tmp_path / "r1", "--data", garbage))
    assert not (tmp_path / "r1").exists()
    data = write(tmp_path / "a.csv", ["user,item", *(f"{u},{i}" for u, _, _, _ in rows() for i in "ab")])
    assert_clean_error(
        invoke("prepare", tmp_path / "r2", "--data", data, "--rating-col", "5"), "--rating-col 5"
    )
    assert_clean_error(
        invoke("prepare", tmp_path / "r2", "--data", data, "--min-rating", "3"), "rating column"
    )
    only_header = write(tmp_path / "h.csv", ["user,item"])
    assert_clean_error(invoke("prepare", tmp_path / "r2", "--data", only_header), "no training interactions")
    only_header.write_text("user,item")  # no line end: pyarrow cannot skip the header, the scan sees no rows
    assert_clean_error(invoke("prepare", tmp_path / "r2", "--data", only_header), "no training interactions")
    assert not (tmp_path / "r2").exists()


# ------------------------------------------------------- ratings and reports


def test_min_rating_keeps_rated_rows_and_prepare_reports_what_it_dropped(tmp_path):
    data = rows(items=20)
    lines = ["user,item,rating,timestamp", *(f"{u},{i},{r},{t}" for u, i, r, t in data), "u0,i2,5,1"]
    path = write(tmp_path / "r.csv", lines)
    result = invoke_ok(
        "prepare", tmp_path / "run", "--data", path, "--min-rating", "3", "--test-fraction", "0.5"
    )
    metrics = read_manifest(tmp_path / "run")["stages"]["prepare"]["metrics"]
    below = sum(r < 3 for _, _, r, _ in data)
    assert metrics["rows_read"] == len(data) + 1
    assert metrics["below_min_rating"] == below
    assert metrics["duplicates"] == 1  # u0,i2 again (both rated >= 3: kept, then collapsed)
    assert metrics["rows_kept"] == len(data) - below - metrics["test_pair_in_train"]
    assert "below_min_rating" in result.stdout
    assert read_manifest(tmp_path / "run")["stages"]["prepare"]["config"]["min_rating"] == 3.0


def test_a_column_of_numbers_turned_text_gets_a_note(tmp_path):
    path = write(tmp_path / "a.csv", ["user,item", *(f"{u},{i}" for u in range(5) for i in range(6)), "5,x1"])
    coded = read_coded([path])
    assert coded.user_tokens is None
    assert coded.notes == ("item ids are read as text tokens: 'x1' is not a plain non-negative integer",)


@pytest.mark.parametrize(
    ("width", "accent"), [(3, "ä"), (3, "a~"), (12, "ä")]
)  # ids of <= 8 bytes packed (by a gather, or padded by pyarrow when ASCII); longer ones hashed as strings
def test_tokens_are_sorted_as_python_sorts_them(width, accent):
    words = ["b", "a", accent, "Z", "aa", "a" * width, "0", "10", "9", "zzzzzzzz"]
    coded = code_columns([pa.array(words), pa.array(["a", accent])], "item")
    assert coded.tokens.tolist() == sorted(set(words))
    assert [coded.tokens[c] for c in coded.codes[0]] == words


# ------------------------------------------------------ fast path = strict scan


cells = st.text(alphabet=string.ascii_letters + string.digits + ' ",;', max_size=4)


@settings(max_examples=60, deadline=None)
@given(table=st.lists(st.lists(cells, min_size=2, max_size=3), min_size=1, max_size=8))
@example(table=[["", ";"], ["", "", ";0"]])  # ';' splits both lines in two: the sniffer takes it
def test_the_fast_reader_agrees_with_pythons_csv(tmp_path_factory, table):
    """Whatever pyarrow accepts, Python's csv module reads the same way, in the dialect the
    reader sniffed; anything else is a DataError, never another exception."""
    path = tmp_path_factory.mktemp("agree") / "a.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle, delimiter=",", lineterminator="\n").writerows(table)
    try:
        read = read_table(path, Columns(user=0, item=1))
    except DataError:
        return
    text = path.read_text(encoding="utf-8-sig")
    delimiter, quotechar = dialect(path, text, next(line for line in text.splitlines() if line.strip()))
    with open(path, newline="") as handle:
        rows = csv.reader(handle, delimiter=delimiter, quotechar=quotechar or '"')
        parsed = [row for row in rows if row][int(read.rows < len(table)) :]
    assert ids(read.users) == [row[0].strip() for row in parsed]
    assert ids(read.items) == [row[1].strip() for row in parsed]


# ------------------------------------------------ one dataset, several formats


def test_the_same_interactions_in_every_format_give_the_same_data(tmp_path):
    data = rows()
    pq = pytest.importorskip("pyarrow.parquet")
    write(tmp_path / "a.csv", ["user,item,rating", *(f"{u},{i},{r}" for u, i, r, _ in data)])
    write(tmp_path / "b.dat", [f"{u}::{i}::{r}::{t}" for u, i, r, t in data])
    write(tmp_path / "c.inter", ["user_id:token\titem_id:token", *(f"{u}\t{i}" for u, i, _, _ in data)])
    grouped = {}
    for u, i, _, _ in data:
        grouped.setdefault(u, []).append(i)
    write(tmp_path / "d.txt", [" ".join([u, *items]) for u, items in grouped.items()])
    users, items = zip(*[(u, i) for u, i, _, _ in data], strict=True)
    pq.write_table(pa.table({"user": list(users), "item": list(items)}), tmp_path / "e.parquet")
    loaded = [
        load_dataset(tmp_path / name, 0.3, seed=3)
        for name in ("a.csv", "b.dat", "c.inter", "d.txt", "e.parquet")
    ]
    for other in loaded[1:]:
        assert other.user_ids.tolist() == loaded[0].user_ids.tolist()
        assert other.item_ids.tolist() == loaded[0].item_ids.tolist()
        assert (other.train != loaded[0].train).nnz == 0 and (other.test != loaded[0].test).nnz == 0


ML_1M = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m"


@pytest.mark.skipif(not ML_1M.is_dir(), reason="../shared/data/ml-1m is not here")
def test_ml_1m_as_ratings_dat_reads_as_its_lightgcn_files(tmp_path):
    for name in ("train", "test"):
        lines = (ML_1M / f"{name}.txt").read_text().splitlines()
        pairs = [(p[0], item) for p in (line.split() for line in lines) if p for item in p[1:]]
        write(tmp_path / f"{name}.dat", [f"{u}::{i}::5::978300760" for u, i in pairs])
    plain, rewritten = load_dataset(ML_1M), load_dataset(tmp_path)
    assert rewritten.user_ids.dtype == np.int64 and rewritten.n_users == plain.n_users == 6039
    assert np.array_equal(rewritten.item_ids, plain.item_ids)
    assert (rewritten.train != plain.train).nnz == 0 and (rewritten.test != plain.test).nnz == 0
