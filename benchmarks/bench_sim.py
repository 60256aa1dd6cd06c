"""Wall time of whole scenarios on the simulated backend (prints figures; asserts nothing).

    python benchmarks/bench_sim.py [--repeat N]
"""
from __future__ import annotations

import argparse
import dataclasses
import warnings
import os
import statistics
import time
from pathlib import Path

import torch

from bench_fl import cpu_name  # noqa: E402  (beside this script)
from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig, load_scenario, run_scenario

HERE = Path(__file__).resolve().parent.parent


def thirty_minutes() -> ScenarioConfig:
    """10 clients behind a 25 kbit/s star: rounds of ~19 s until 30 minutes of scenario time are up."""
    return ScenarioConfig(
        name="thirty_minutes", duration_minutes=30,
        fl_config=FLConfig(model_architecture="logreg", total_rounds=1000, clients_per_round=10, learning_rate=0.2,
                           client_data_sizes=[100] * 10),
        network_config=NetworkConfig(node_count=11, link_bandwidth_mbps=0.025, base_latency_ms=10))


def main() -> None:
    warnings.simplefilter("ignore")  # the seed's node_count 12 for 12 clients warns, as it should
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    cases = {
        "digits_star (issue 2: 10 clients x 150, MLP, 20 rounds)": load_scenario(
            HERE / "tests/data/digits_star.scenario.yaml"),
        "quickstart (scenarios/quickstart)": load_scenario(HERE / "scenarios/quickstart/scenario.yaml"),
        "thirty_minutes (30 min of scenario time)": thirty_minutes(),
        "network_instability_ci (the seed's 4 network events)": load_scenario(
            HERE / "tests/data/network_instability_ci.yaml"),
        "adversarial_attacks_ci (the seed's 4 attack events)": load_scenario(
            HERE / "tests/data/adversarial_attacks_ci.yaml"),
    }
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'scenario':<56} {'rounds':>6} {'scenario s':>10} {'final acc':>9} {'wall s (median)':>15}")
    for label, config in cases.items():
        walls = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = run_scenario(dataclasses.replace(config), seed=0)
            walls.append(time.perf_counter() - t0)
        print(f"{label:<56} {result.rounds_completed:>6} {result.duration_seconds:>10.1f} "
              f"{result.final_accuracy:>9.4f} {statistics.median(walls):>15.2f}")


if __name__ == "__main__":
    main()
