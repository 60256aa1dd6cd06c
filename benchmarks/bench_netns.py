"""The netns backend against the simulation, and what this machine forwards (prints figures;
asserts nothing). Needs root, Open vSwitch, nftables and Ryu's environment, as the backend does.

    python benchmarks/bench_netns.py calibrate [--bandwidths 5 10 50] [--losses 0 0.01 0.05] [--rounds 3]
    python benchmarks/bench_netns.py capacity

calibrate: the three-client MLP scenario of tests/backends/test_netns_backend.py (training takes no time,
so a round is its six model transfers over the server's link) on both backends, per bandwidth and
loss rate on every link: mean round time, and the netns/sim ratio.
capacity: aggregate TCP throughput through the OVS userspace datapath with unshaped links, for
one and eight concurrent flows: the ceiling for link bandwidth x time_scale.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench_fl import cpu_name  # beside this script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def calibrate(bandwidths: list[float], losses: list[float], rounds: int) -> None:
    from test_netns_backend import fl_scenario

    from pytest_flopynet import ScenarioEvent
    from pytest_flopynet.session import Scenario
    print(f"{cpu_name()}, {os.cpu_count()} cores; 3 clients, MLP 340 kB model, {rounds} rounds per cell")
    print("| bandwidth | loss | sim round (s) | netns round (s) | netns / sim |")
    print("|---|---|---|---|---|")
    for bw in bandwidths:
        for loss in losses:
            events = [ScenarioEvent(event_type="network_packet_loss", trigger_time=0.0, target="all_links",
                                    parameters={"packet_loss_rate": loss})] if loss else []
            means = {}
            for backend in ("sim", "netns"):
                result = Scenario(fl_scenario(rounds=rounds, bw=bw, events=events), seed=1, backend=backend).run()
                times = [r.end_time - r.start_time for r in result.execution.metrics.rounds]
                means[backend] = sum(times) / len(times)
            print(f"| {bw:g} Mbit/s | {loss:.0%} | {means['sim']:.3f} | {means['netns']:.3f} | "
                  f"{means['netns'] / means['sim']:.2f} |", flush=True)


def capacity() -> None:
    from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig
    from pytest_flopynet.controller import Controller
    from pytest_flopynet.engine.clock import WallClock
    from pytest_flopynet.network import build_topology
    from pytest_flopynet.network.backend import Flow
    from pytest_flopynet.network.netns import NetnsNetwork
    cfg = ScenarioConfig(name="capacity", fl_config=FLConfig(client_data_sizes=[10] * 8),
                         network_config=NetworkConfig(topology_type="star", node_count=9, switch_count=3,
                                                      link_bandwidth_mbps=100_000))
    topo = build_topology(cfg)
    clock = WallClock()
    net = NetnsNetwork(clock, Controller(topo))
    net.build(topo)
    clock.start()
    print(f"{cpu_name()}, {os.cpu_count()} cores; star of 3 switches, links unshaped")
    try:
        for n in (1, 8):
            for size in (1_650_000, 20_000_000):
                start = clock.now()
                done = net.transfer([Flow("fl_server", c, size, start) for c in topo.clients[:n]])
                wall = max(done) - start
                print(f"{n} flow(s) x {size / 1e6:.2f} MB: {wall:.3f} s, {n * size * 8 / wall / 1e6:.0f} Mbit/s")
    finally:
        net.teardown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("calibrate")
    c.add_argument("--bandwidths", type=float, nargs="+", default=[5, 10, 50])
    c.add_argument("--losses", type=float, nargs="+", default=[0, 0.01, 0.05])
    c.add_argument("--rounds", type=int, default=3)
    sub.add_parser("capacity")
    args = p.parse_args()
    if args.what == "calibrate":
        calibrate(args.bandwidths, args.losses, args.rounds)
    else:
        capacity()


if __name__ == "__main__":
    main()
