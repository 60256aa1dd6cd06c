"""Torch threads per run: wall time of `flopynet run` at the default, --threads 1 and --threads 2 (or more),
on an idle machine and with one core kept busy by another process; and whether the results are
byte-identical across thread counts. Prints figures; asserts nothing.

    python benchmarks/bench_threads.py [--scenarios quickstart basic_fl_training_ci] [--threads 1 2] [--repeat 1]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_fl import cpu_name  # beside this script

ROOT = Path(__file__).resolve().parent.parent


def spin(stop) -> None:
    while not stop.is_set():
        pass


def run(scenario: str, threads: int | None, folder: Path) -> tuple[float, str]:
    """Wall seconds of one `flopynet run`, and a digest of its results without the wall-clock fields."""
    out = folder / f"{scenario}-{threads}.json"
    argv = [sys.executable, "-m", "pytest_flopynet.cli", "run", scenario, "-q", "--reports", "", "--json", str(out)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr[-2000:]}")
    results = json.loads(out.read_text())
    keep = {k: results[k] for k in ("rounds", "events", "execution_summary", "custom_analysis")}
    return wall, hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=["quickstart", "basic_fl_training_ci"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the best is shown")
    args = ap.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"{'scenario':<24} {'other load':<14} {'threads':<8} {'wall s':>8}  results")
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            for busy in (False, True):
                stop = multiprocessing.Event()
                spinner = multiprocessing.Process(target=spin, args=(stop,), daemon=True) if busy else None
                if spinner:
                    spinner.start()
                try:
                    for threads in (None, *args.threads):
                        walls, digests = zip(*(run(scenario, threads, Path(tmp)) for _ in range(args.repeat)))
                        label = "default" if threads is None else str(threads)
                        print(f"{scenario:<24} {'one core busy' if busy else 'idle':<14} {label:<8} {min(walls):>8.1f}  "
                              f"{digests[0]}{'' if len(set(digests)) == 1 else ' (differs between repeats)'}")
                finally:
                    if spinner:
                        stop.set()
                        spinner.join()


if __name__ == "__main__":
    main()
