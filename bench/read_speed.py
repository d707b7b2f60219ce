"""Seconds and peak memory of each reader on a generated file of 10 million interactions.

    python bench/read_speed.py     # 10M rows: CSV with integer and with string ids, and the other formats
    python bench/read_speed.py --rows 1000000 --only csv-int,csv-str --min-rating 3

Each file is written into a temporary directory (removed afterwards), then read in a
fresh process by ``readers.dataset.read_coded``: the reader plus the coding of ids
(integers kept, tokens hashed and sorted), which is what prepare does before it maps
and splits. Ratings are parsed only with ``--min-rating``, as in prepare. The child
reports its wall time and peak RSS (ru_maxrss, which includes the interpreter and
pyarrow: about 100 MB before any data); files are written by another process, since a
child's ru_maxrss starts from its parent's. Imports are not timed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

USERS, ITEMS = 200_000, 500_000
CASES = {
    "csv-int": "user,item,rating,timestamp with integer ids",
    "csv-str": "the same with string ids: u123, i456",
    "csv-long": "the same with 13-byte ids (user_00000123): ids longer than 8 bytes take the slower path",
    "tsv-str": "tab-separated, string ids",
    "dat-int": "MovieLens ratings.dat (user::item::rating::time)",
    "inter-str": "RecBole .inter with a typed header",
    "txt-int": "LightGCN text (user item item ...), the same interactions grouped by user",
    "parquet-str": "Parquet, string ids",
}


def columns(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "user": rng.integers(0, USERS, rows),
        "item": rng.integers(0, ITEMS, rows),
        "rating": rng.integers(1, 6, rows),
        "timestamp": rng.integers(900_000_000, 1_700_000_000, rows),
    }


def _ids(values: np.ndarray, kind: str, prefix: str):
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(values).cast(pa.string())
    if kind == "int":
        return pa.array(values)
    if kind == "str":
        return pc.binary_join_element_wise(prefix, text, "")
    padded = pc.utf8_lpad(text, 8, "0")
    return pc.binary_join_element_wise(f"{'user' if prefix == 'u' else 'item'}_", padded, "")


def write(case: str, rows: int, folder: Path) -> Path:
    """Generate one case's file with pyarrow's writers (seconds, not minutes, for 10M rows)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    fmt, kind = case.split("-")
    data = columns(rows)
    table = pa.table(
        {
            "user": _ids(data["user"], kind, "u"),
            "item": _ids(data["item"], kind, "i"),
            "rating": pa.array(data["rating"]),
            "timestamp": pa.array(data["timestamp"]),
        }
    )
    path = folder / f"{case}.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "txt":
        _write_lightgcn(path, data["user"], data["item"])
    else:
        delimiter = "\t" if fmt in ("tsv", "inter") else ","
        body = folder / "body.csv"
        options = pacsv.WriteOptions(quoting_style="none", include_header=False, delimiter=delimiter)
        pacsv.write_csv(table, body, options)
        names = (
            ["user_id:token", "item_id:token", "rating:float", "timestamp:float"] if fmt == "inter" else []
        )
        header = "" if fmt == "dat" else delimiter.join(names or table.column_names) + "\n"
        blob = body.read_bytes()
        path.write_bytes(header.encode() + (blob.replace(b",", b"::") if fmt == "dat" else blob))
        body.unlink()
    return path


def _write_lightgcn(path: Path, users: np.ndarray, items: np.ndarray) -> None:
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    with open(path, "w") as handle:
        for begin, end in zip(starts, np.r_[starts[1:], users.size], strict=True):
            handle.write(f"{users[begin]} {' '.join(map(str, items[begin:end].tolist()))}\n")


def child(path: str, min_rating: float | None) -> None:
    """Read one file as prepare would and print seconds and peak RSS as JSON."""
    import resource

    import pyarrow.compute
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401  (imports are timed apart: about 0.5 s)

    from legcf_core.readers.dataset import read_coded

    started = time.perf_counter()
    coded = read_coded([Path(path)], min_rating=min_rating)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    users = "integers" if coded.user_tokens is None else f"{coded.user_tokens.size} tokens"
    rows = coded.counts["rows_read"]
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "rows": rows, "users": users}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--min-rating", type=float, help="also parse ratings and keep those >= this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.min_rating)
        return
    if args.write:  # in its own process, so the reader's peak RSS does not inherit the writer's
        write(args.write[0], args.rows, Path(args.write[1]))
        return
    print(f"{'case':<12} {'MB':>6} {'write s':>8} {'read s':>7} {'peak RSS':>9}  ids")
    with tempfile.TemporaryDirectory() as work:
        for case in args.only.split(","):
            started = time.perf_counter()
            command = [sys.executable, __file__, "--rows", str(args.rows), "--write", case, work]
            subprocess.run(command, check=True)
            path = next(Path(work).glob(f"{case}.*"))
            written = time.perf_counter() - started
            command = [sys.executable, __file__, "--child", str(path)]
            command += [] if args.min_rating is None else ["--min-rating", str(args.min_rating)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            size = path.stat().st_size / 1e6
            print(
                f"{case:<12} {size:6.0f} {written:8.1f} {result['seconds']:7.2f} "
                f"{result['peak_rss'] / 2**30:7.2f} GB  {result['users']}",
                flush=True,
            )
            path.unlink()


if __name__ == "__main__":
    main()
