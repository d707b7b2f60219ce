"""Load a ``legcf serve`` server with single-user top-20 requests and print what it holds.

    python bench/serve_load.py runs/demo/model.safetensors                  # starts a server itself
    python bench/serve_load.py MODEL --url http://127.0.0.1:8000 --seconds 30  # one already running

Each of ``--threads`` clients (default 8) keeps one connection open and sends
``GET /recommend?user=ID&k=20`` for user ids drawn (seeded) from MODEL, one after
another, for ``--seconds``. Prints requests/s, p50/p99/max latency in ms and the
errors (a non-200 answer or a failed connection). The client is the standard
library's, so its own cost stays small; it shares the machine with the server.
A benchmark, not a test: numbers depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


def sample_users(model: Path, count: int, seed: int) -> list[int]:
    """Raw user ids of the model, ``count`` drawn with replacement."""
    import legcf_core

    ids = legcf_core.load(model).user_ids
    return [int(u) for u in np.random.default_rng(seed).choice(ids, size=count)]


def client(url: str, users: list[int], k: int, until: float, out: dict) -> None:
    """One client: requests on one kept-alive connection until ``until``; latencies and errors in ``out``."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    latencies, errors, n = [], 0, 0
    while time.perf_counter() < until:
        user = users[n % len(users)]
        n += 1
        started = time.perf_counter()
        try:
            connection.request("GET", f"/recommend?user={user}&k={k}")
            response = connection.getresponse()
            body = response.read()
            ok = response.status == 200 and len(json.loads(body)["items"]) > 0
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            ok = False
            connection.close()
        latencies.append(time.perf_counter() - started)
        errors += not ok
    connection.close()
    out["latencies"], out["errors"] = latencies, errors


def load(url: str, users: list[int], threads: int, seconds: float, k: int) -> dict:
    """Run the clients together; the summary of all their requests."""
    results = [{} for _ in range(threads)]
    until = time.perf_counter() + seconds
    workers = [
        threading.Thread(target=client, args=(url, users[i::threads], k, until, results[i]))
        for i in range(threads)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    latencies = np.concatenate([np.asarray(r["latencies"]) for r in results]) * 1000
    return {
        "threads": threads,
        "seconds": round(elapsed, 2),
        "requests": int(latencies.size),
        "requests_per_s": round(latencies.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "max_ms": round(float(latencies.max()), 2),
        "errors": int(sum(r["errors"] for r in results)),
    }


@contextmanager
def local_server(model: Path):
    """``legcf serve MODEL`` on a free port of 127.0.0.1, until the block ends; yields its url."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "legcf_cli", "-q", "serve", str(model), "--port", str(port)]
    proc = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    parts, deadline = urlsplit(url), time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="The model the server serves (user ids are drawn from it).")
    parser.add_argument("--url", help="A running server; default: start 'legcf serve MODEL' here.")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="Seconds of load before measuring.")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    users = sample_users(args.model, 10_000, args.seed)
    with local_server(args.model) if args.url is None else nullcontext(args.url) as url:
        load(url, users, args.threads, args.warmup, args.k)
        result = {"url": url, "k": args.k, **load(url, users, args.threads, args.seconds, args.k)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>15}  {value}")


if __name__ == "__main__":
    main()
