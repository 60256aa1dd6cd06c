"""The nodes executor's per-round overhead against in-process training on the same netns network:
digits, MLP [64], 5 local epochs, 150 samples a client, every client every round, 10 rounds.
With --agreement: the tests/data digits star (10 clients, 20 rounds) with SCAFFOLD, and with a noisy
client under strict anomaly detection, on both executors and several seeds: what the node processes
carry besides the model (control variates, the policy's flags) agrees with in-process training.

    python benchmarks/bench_nodes.py [--clients 3 10] [--rounds 10]
    python benchmarks/bench_nodes.py --agreement [--seeds 1 2 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

from pytest_flopynet import ScenarioEvent, load_scenario
from pytest_flopynet.session import Scenario

BASE = load_scenario(Path(__file__).parents[1] / "tests" / "data" / "digits_star.scenario.yaml")


def config(clients: int, rounds: int):
    fl = dataclasses.replace(BASE.fl_config, client_data_sizes=[150] * clients, clients_per_round=clients,
                             total_rounds=rounds)
    return dataclasses.replace(BASE, name=f"digits_star_{clients}", fl_config=fl,
                               network_config=dataclasses.replace(BASE.network_config, node_count=clients + 1))


def agreement(seeds: list[int]) -> None:
    scaffold = dataclasses.replace(BASE, name="digits_star scaffold",
                                   fl_config=dataclasses.replace(BASE.fl_config, aggregation_method="scaffold"))
    noisy = dataclasses.replace(BASE, name="digits_star noisy client_3, strict policy", events=[
        ScenarioEvent(event_type="policy_change", target="policy_engine", trigger_time=0.0,
                      parameters={"policy_name": "strict_anomaly_detection", "quarantine_duration": 60.0}),
        ScenarioEvent(event_type="model_poisoning", target="client_3", trigger_time=0.0,
                      parameters={"attack_type": "gaussian_noise", "noise_std": 1.0})])
    print("| scenario | seed | executor | rounds | final accuracy | round 1 bytes up | rejected updates "
          "| detection rate | false-positive rate | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config in (scaffold, noisy):
        for seed in seeds:
            for executor in ("nodes", "sequential"):
                began = time.monotonic()
                r = Scenario(config, seed=seed, backend="netns", executor=executor).run()
                pm = r.execution.policy_metrics
                fpr = pm.get("false_positive_rate")
                print(f"| {config.name} | {seed} | {executor} | {r.rounds_completed} | {r.final_accuracy:.4f} "
                      f"| {r.rounds[0]['bytes_up']} | {sum(len(x.get('rejected') or []) for x in r.rounds)} "
                      f"| {pm.get('attack_detection_rate')} | {'-' if fpr is None else f'{fpr:.4f}'} "
                      f"| {time.monotonic() - began:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[3, 10])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--agreement", action="store_true", help="SCAFFOLD and policy screening: nodes against in-process")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, netns backend")
    if args.agreement:
        return agreement(args.seeds)
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
