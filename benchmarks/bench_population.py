"""Per-round wall time and peak memory against the population size (prints figures; asserts nothing).

    python benchmarks/bench_population.py [--populations 1000 10000 100000] [--per-round 1000] [--rounds 5]
        [--samples 20] [--profile]

Each run is a star of `population` clients (synthetic_alpha_beta, `samples` training samples each, logistic
regression, one local epoch) of which `per-round` train each round, on the simulated backend, seed 0; one
child process per population, so each peak RSS is its own. The time to build the run (data, topology,
cluster) is printed apart from the rounds'; the first round includes building the network backend.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import time
import warnings

from bench_fl import cpu_name  # beside this script


def config(population: int, per_round: int, rounds: int, samples: int):
    from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig
    return ScenarioConfig(
        name=f"population_{population}", duration_minutes=10_000,
        fl_config=FLConfig(model_architecture="logreg", dataset="synthetic_alpha_beta", total_rounds=rounds,
                           clients_per_round=per_round, learning_rate=0.05, batch_size=10,
                           client_data_sizes=[samples] * population),
        network_config=NetworkConfig(node_count=population + 1, link_bandwidth_mbps=100, base_latency_ms=10))


def child(population: int, per_round: int, rounds: int, samples: int, profile: bool) -> None:
    """One run; prints a JSON line: build and per-round wall seconds, peak RSS, final accuracy."""
    warnings.simplefilter("ignore")
    from pytest_flopynet import Scenario
    rounds_at: list[float] = []
    t0 = time.perf_counter()
    scenario = Scenario(config(population, per_round, rounds, samples), seed=0,
                        on_round_end=lambda **_: rounds_at.append(time.perf_counter()))
    scenario.topology, scenario.cluster  # built here, timed apart from the rounds
    t1 = time.perf_counter()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    result = scenario.run()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    per_round = [b - a for a, b in zip([t1, *rounds_at], rounds_at)]
    print(json.dumps({"population": population, "build_s": t1 - t0,
                      "round_s": per_round, "rounds": result.rounds_completed,
                      "final_accuracy": result.final_accuracy,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--populations", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--per-round", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--profile", action="store_true", help="cProfile each run (to standard error)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.per_round, args.rounds, args.samples, args.profile)
        return
    import torch
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}; logistic regression, "
          f"{args.per_round} clients per round, {args.samples} samples each, {args.rounds} rounds, sim backend")
    print("| population | build s | first round s | later rounds s (mean) | peak RSS MB | final accuracy |")
    print("|---|---|---|---|---|---|")
    for population in args.populations:
        out = subprocess.run([sys.executable, __file__, "--child", str(population), "--per-round", str(args.per_round),
                              "--rounds", str(args.rounds), "--samples", str(args.samples)]
                             + (["--profile"] if args.profile else []), capture_output=True, text=True,
                             env={**os.environ, "FLOPYNET_LIMITS": "clients=1e6,hosts=1e6"})  # past 200,000
        if args.profile:
            sys.stderr.write(out.stderr)
        if out.returncode:
            print(f"| {population} | failed: {out.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        later = r["round_s"][1:] or r["round_s"]
        print(f"| {population} | {r['build_s']:.2f} | {r['round_s'][0] if r['round_s'] else float('nan'):.2f} | "
              f"{sum(later) / max(len(later), 1):.2f} | {r['peak_rss_mb']:.0f} | {r['final_accuracy']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
