"""The nodes executor's per-round overhead against in-process training on the same netns network:
digits, MLP [64], 5 local epochs, 150 samples a client, every client every round, 10 rounds.

    python benchmarks/bench_nodes.py [--clients 3 10] [--rounds 10]
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

from pytest_flopynet import load_scenario
from pytest_flopynet.session import Scenario

BASE = load_scenario(Path(__file__).parents[1] / "tests" / "data" / "digits_star.scenario.yaml")


def config(clients: int, rounds: int):
    fl = dataclasses.replace(BASE.fl_config, client_data_sizes=[150] * clients, clients_per_round=clients,
                             total_rounds=rounds)
    return dataclasses.replace(BASE, name=f"digits_star_{clients}", fl_config=fl,
                               network_config=dataclasses.replace(BASE.network_config, node_count=clients + 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[3, 10])
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, netns backend")
    print("| clients | executor | run s (wall) | mean round s (scenario) | final accuracy |")
    print("|---|---|---|---|---|")
    for n in args.clients:
        for executor in ("sequential", "nodes"):
            began = time.monotonic()
            result = Scenario(config(n, args.rounds), seed=1, backend="netns", executor=executor).run()
            wall = time.monotonic() - began
            rounds = result.rounds
            mean = sum(r["end_time"] - r["start_time"] for r in rounds) / len(rounds)
            print(f"| {n} | {executor} | {wall:.1f} | {mean:.3f} | {result.final_accuracy:.4f} |", flush=True)


if __name__ == "__main__":
    main()
