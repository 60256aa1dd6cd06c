"""The loader on hostile files: seconds, peak memory (tracemalloc) and message size per file of the
corpus in tests/model/test_loader.py (the issue's bounds: under 5 s, 400 MB and 4 kB each).

    python benchmarks/bench_loader.py
"""
import platform
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "model"))

from test_loader import CORPUS  # noqa: E402

from pytest_flopynet.errors import FlopynetError  # noqa: E402
from pytest_flopynet.model import loads  # noqa: E402


def main() -> None:
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{'file':28} {'seconds':>8} {'peak MB':>8} {'message B':>10}")
    for name, (text, _, _) in sorted(CORPUS.items()):
        tracemalloc.start()
        start = time.perf_counter()
        try:
            loads(text, name, "json" if name.endswith(".json") else "yaml")
            message = ""
        except FlopynetError as exc:
            message = str(exc)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"{name:28} {seconds:8.4f} {peak:8.1f} {len(message):10d}")


if __name__ == "__main__":
    main()
