"""Time ``legcf --help`` and a parse error in fresh processes (best of N): the CLI's start-up cost.

    python bench/cli_startup.py --repeat 5

The CLI imports no torch, numpy or scipy until a command runs
(tests/test_cli_shell.py checks that); this prints what that buys.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time


def best_of(repeat: int, command: list[str]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    legcf = shutil.which("legcf") or sys.exit("legcf is not on PATH; install the package first")
    for label, extra in (
        ("legcf --help", ["--help"]),
        ("legcf pretrain --embedding bad", ["pretrain", "x", "--embedding", "bad"]),
    ):
        print(f"{label:<34} {best_of(args.repeat, [legcf, *extra]):.3f} s")


if __name__ == "__main__":
    main()
