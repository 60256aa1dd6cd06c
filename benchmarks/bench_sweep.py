"""Runs per minute of one sweep on the local engine and on a multi-node Ray cluster started on this machine
(Ray's own test-cluster utilities: each node its own raylet and workers), with the same results (prints
figures; asserts nothing but that equality).

    python benchmarks/bench_sweep.py [--scenario NAME|FILE] [--seeds 1-8] [--nodes 2] [--cpus-per-node 1]

The scenario (default: the built-in quickstart, an MLP on digits) runs once per seed; the local engine
uses nodes x cpus-per-node processes, the Ray cluster as many CPUs in all.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

from bench_fl import cpu_name  # beside this script

from pytest_flopynet.commands.sweep import parse_seeds, sweep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="quickstart")
    p.add_argument("--seeds", default="1-8")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=1)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import ray
    from ray.cluster_utils import Cluster

    seeds, cpus = parse_seeds(args.seeds), args.nodes * args.cpus_per_node
    print(f"{cpu_name()}, {os.cpu_count()} cores, Ray {ray.__version__}; {args.scenario}, {len(seeds)} seeds")
    print("| engine | CPUs | runs | wall s | runs per minute | mean final accuracy |\n|---|---|---|---|---|---|")
    results = {}
    for engine in ("local", "ray"):
        cluster = None
        if engine == "ray":
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node})
            for _ in range(args.nodes - 1):
                cluster.add_node(num_cpus=args.cpus_per_node)
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        try:
            out = sweep(args.scenario, seeds, [], engine=engine, workers=cpus)
        finally:
            if cluster is not None:
                ray.shutdown()
                cluster.shutdown()
        wall = time.perf_counter() - t0
        results[engine] = out["runs"]
        label = engine if engine == "local" else f"ray, {args.nodes} nodes"
        acc = out["groups"][0]["metrics"]["final_accuracy"]["mean"]
        print(f"| {label} | {cpus} | {len(out['runs'])} | {wall:.1f} | {len(out['runs']) / wall * 60:.1f} | "
              f"{acc:.4f} |", flush=True)
    assert results["local"] == results["ray"], "the engines disagree"
    print("same runs on both engines")


if __name__ == "__main__":
    main()
