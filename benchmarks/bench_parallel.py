"""pytest-xdist against one process, and Hypothesis examples per second (prints figures; asserts nothing).

    python benchmarks/bench_parallel.py xdist [--workers 2] [-m ci_size]
    python benchmarks/bench_parallel.py fuzz [--examples 50]

xdist: runs `pytest scenarios -m MARK` with -n 0 and with -n WORKERS (fresh report folders), prints
both wall times and their ratio, and whether every test's metrics.json is byte-identical.
fuzz: runs the built-in fuzzed partition test with the given number of examples and prints the rate.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_fl import cpu_name  # beside this script

ROOT = Path(__file__).resolve().parent.parent


def pytest_run(*args: str, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - start, proc


def xdist(workers: int, mark: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        walls, metrics = {}, {}
        for n in (0, workers):
            reports = Path(tmp) / f"n{n}"
            walls[n], proc = pytest_run("scenarios", "-m", mark, "-n", str(n), "--flopynet-reports", str(reports))
            print(f"-n {n}: {walls[n]:.1f} s  ({proc.stdout.strip().splitlines()[-1]})")
            metrics[n] = {p.parent.name: p.read_bytes() for p in reports.glob("*/metrics.json")}
        same = metrics[0] == metrics[workers]
        print(f"{os.cpu_count()} cores, {cpu_name()}: -n {workers} is {walls[0] / walls[workers]:.2f}x faster; "
              f"metrics.json of all {len(metrics[0])} tests {'identical' if same else 'DIFFER'}")


def fuzz(examples: int) -> None:
    test = ("scenarios/fuzzed_schedules/test_fuzzed_schedules.py"
            "::test_fedavg_keeps_its_accuracy_under_any_three_partitions")
    with tempfile.TemporaryDirectory() as tmp:
        conftest = Path(tmp) / "flopynet_bench_profile.py"
        conftest.write_text("from hypothesis import settings, HealthCheck\n"
                            f"settings.register_profile('bench', max_examples={examples}, deadline=None, "
                            "database=None, suppress_health_check=list(HealthCheck))\n")
        wall, proc = pytest_run(test, "--hypothesis-profile", "bench", "--hypothesis-show-statistics",
                                "-p", "flopynet_bench_profile", "--flopynet-reports", tmp, env={"PYTHONPATH": tmp})
    generate = [line for line in proc.stdout.splitlines() if "passing," in line]
    print(f"{examples} examples in {wall:.1f} s of wall time (pytest start-up included): "
          f"{examples / wall:.2f} examples/s on {os.cpu_count()} cores, {cpu_name()}")
    print("\n".join(line.strip() for line in generate) or proc.stdout[-2000:])
    if proc.returncode != 0:
        print(proc.stdout[-3000:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    x = sub.add_parser("xdist")
    x.add_argument("--workers", type=int, default=2)
    x.add_argument("-m", dest="mark", default="ci_size")
    f = sub.add_parser("fuzz")
    f.add_argument("--examples", type=int, default=50)
    args = p.parse_args()
    xdist(args.workers, args.mark) if args.what == "xdist" else fuzz(args.examples)


if __name__ == "__main__":
    main()
