"""The simulated network against real TCP on the netns backend, one bottleneck (flopynet calibrate's set-up):
seconds per cell, sim / netns, and the kernel's TCP counters of the senders (prints figures; asserts
nothing). Needs what the netns backend needs (root, Open vSwitch, nftables, Ryu's environment).

    python benchmarks/bench_calibration.py [--bandwidths 5 10 50] [--losses 0 0.01 0.02 0.05]
        [--cc cubic bbr] [--flows 1 2] [--seconds 3] [--repeat 5] [--jsonl FILE] | --replay FILE

Each cell sends --seconds worth of lossless transfer (bandwidth x seconds bytes per flow), --repeat times
on the same lab; the table gives the mean and the spread (min-max) of the netns times, the sim's time at
the lab's measured RTT, and per transfer the retransmitted segments and retransmission timeouts
(nstat's TcpRetransSegs and TcpExtTCPTimeouts, summed over the hosts' namespaces).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import warnings

from bench_fl import cpu_name  # beside this script

from pytest_flopynet.commands.calibrate import Bottleneck, calibrate
from pytest_flopynet.network.lab import tool

COUNTERS = ("TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes", "TcpExtTCPSynRetrans", "TcpOutSegs",
            "TcpExtTCPLostRetransmit", "TcpExtTCPSpuriousRTOs", "TcpExtTCPSackRecovery", "TcpExtTCPLossProbeRecovery",
            "TcpExtTCPDSACKRecv", "TcpExtTCPSACKReorder")


def counters(bottleneck: Bottleneck) -> dict[str, int]:
    """The hosts' TCP counters summed (each namespace has its own)."""
    lab, total = bottleneck.net.lab, dict.fromkeys(COUNTERS, 0)
    for host in bottleneck.topology.hosts:
        out = subprocess.run([tool("ip"), "netns", "exec", lab.ns(host), "nstat", "-asz", *COUNTERS],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] in total:
                total[parts[0]] += int(parts[1])
    return total


HEADER = ("| cc | flows | Mbit/s | loss | bytes/flow | RTT ms | netns s (min-max) | sim s | sim/netns | "
          "retrans/transfer | RTOs/transfer |\n|---|---|---|---|---|---|---|---|---|---|---|")


def row(cell: dict, sim: float) -> str:
    times, per, mean = cell["netns_seconds"], cell["counters"], statistics.mean(cell["netns_seconds"])
    spread = f"{mean:.3f} ({min(times):.3f}-{max(times):.3f}, n={len(times)})"
    return (f"| {cell['cc']} | {cell['flows']} | {cell['bandwidth_mbps']:g} | {cell['loss']:.0%} | {cell['bytes']} | "
            f"{cell['rtt_ms']:.2f} | {spread} | {sim:.3f} | {sim / mean:.2f} | "
            f"{per['TcpRetransSegs']:.0f} | {per['TcpExtTCPTimeouts']:.1f} |")


def simulated(cell: dict) -> float:
    return calibrate("sim", nbytes=cell["bytes"], bandwidth_mbps=cell["bandwidth_mbps"], rtt_ms=cell["rtt_ms"],
                     loss=cell["loss"], flows=cell["flows"], congestion_control=cell["cc"])["seconds"]


def replay(paths: list[str]) -> None:
    """The cells of one or more --jsonl files, the transfers of a cell measured twice pooled."""
    pooled: dict[tuple, dict] = {}
    for path in paths:
        for line in open(path, encoding="utf-8"):
            if not line.strip():
                continue
            cell = json.loads(line)
            key = (cell["cc"], cell["flows"], cell["bandwidth_mbps"], cell["loss"], cell["bytes"])
            if key not in pooled:
                pooled[key] = cell
                continue
            old, n, m = pooled[key], len(pooled[key]["netns_seconds"]), len(cell["netns_seconds"])
            old["counters"] = {k: (old["counters"][k] * n + cell["counters"][k] * m) / (n + m) for k in old["counters"]}
            old["netns_seconds"] = old["netns_seconds"] + cell["netns_seconds"]
            old["rtt_ms"] = (old["rtt_ms"] * n + cell["rtt_ms"] * m) / (n + m)
    cells = list(pooled.values())
    print(HEADER)
    worst = 0.0
    for cell in cells:
        sim = simulated(cell)
        worst = max(worst, abs(sim / statistics.mean(cell["netns_seconds"]) - 1))
        print(row(cell, sim))
    print(f"\nlargest |sim / netns - 1|: {worst:.1%} over {len(cells)} cells; n = transfers per cell\n")
    losses = sorted({c["loss"] for c in cells})
    print("| cc | flows | Mbit/s | " + " | ".join(f"{p:.0%} loss: netns s, sim/netns" for p in losses) + " |")
    print("|---|---|---|" + "---|" * len(losses))
    for key in dict.fromkeys((c["cc"], c["flows"], c["bandwidth_mbps"]) for c in cells):
        by_loss = {c["loss"]: c for c in cells if (c["cc"], c["flows"], c["bandwidth_mbps"]) == key}
        parts = []
        for p in losses:
            c = by_loss.get(p)
            mean = statistics.mean(c["netns_seconds"]) if c else None
            parts.append(f"{mean:.2f}, {simulated(c) / mean:.2f}" if c else "")
        print(f"| {key[0]} | {key[1]} | {key[2]:g} | " + " | ".join(parts) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bandwidths", type=float, nargs="+", default=[5, 10, 50])
    p.add_argument("--losses", type=float, nargs="+", default=[0, 0.01, 0.02, 0.05])
    p.add_argument("--cc", nargs="+", default=["cubic", "bbr"])
    p.add_argument("--flows", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--jsonl", help="also append each cell's figures to this file, a JSON object per line")
    p.add_argument("--replay", metavar="JSONL", nargs="+", help="no lab: the netns figures of earlier --jsonl files "
                                                                "(pooled), against the simulation as it is now")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    if args.replay:
        return replay(args.replay)
    print(f"{cpu_name()}, {os.cpu_count()} cores; {args.repeat} transfers per cell, {args.seconds:g} s of "
          f"lossless transfer each")
    print(HEADER)
    for cc in args.cc:
        with Bottleneck("netns", flows=max(args.flows), congestion_control=cc) as lab:
            for flows in args.flows:
                for bw in args.bandwidths:
                    nbytes = int(bw * 1e6 / 8 * args.seconds)
                    for loss in args.losses:
                        times, before = [], counters(lab)
                        for _ in range(args.repeat):
                            times.append(lab.measure(nbytes, bw, loss, flows)["seconds"])
                        after = counters(lab)
                        per = {k: (after[k] - before[k]) / args.repeat for k in COUNTERS}
                        cell = {"cc": cc, "flows": flows, "bandwidth_mbps": bw, "loss": loss, "bytes": nbytes,
                                "rtt_ms": lab.rtt_ms, "netns_seconds": times, "counters": per}
                        if args.jsonl:
                            with open(args.jsonl, "a", encoding="utf-8") as out:
                                out.write(json.dumps(cell) + "\n")
                        print(row(cell, simulated(cell)), flush=True)


if __name__ == "__main__":
    main()
