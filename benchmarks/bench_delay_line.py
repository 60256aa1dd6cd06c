"""The simulated network against real TCP at RTTs the netns lab cannot make (this kernel has no netem):
two namespaces joined through a third, where a user-space delay line (raw sockets, this script) holds
every frame for the one-way delay and drops the given share both ways; the sender's veth is shaped with
HTB to the bandwidth. Prints seconds per cell, real (mean of --repeat) and simulated; asserts nothing.
Needs root, iproute2, tc and ethtool.

    python benchmarks/bench_delay_line.py [--rtts 20 100] [--bandwidths 5] [--losses 0 0.01 0.05]
        [--cc cubic bbr] [--seconds 3] [--repeat 3] [--jsonl FILE] | --replay FILE...

Per transfer the sender's retransmitted segments and retransmission timeouts (nstat) are printed too, and
with --jsonl each cell (times and mean counters) is appended to FILE; --replay prints such files' cells
again with the sim as it is now (no root needed). A lost SYN costs a real transfer 1 s (Linux's initial RTO)
and the sim its expectation: the last columns compare the two without them.

The delay line is Python: good for a few thousand frames a second (5-10 Mbit/s), not for line rate.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import socket
import statistics
import subprocess
import sys
import time
import warnings

from bench_fl import cpu_name  # beside this script

from bench_calibration import COUNTERS  # beside this script

from pytest_flopynet.commands.calibrate import calibrate
from pytest_flopynet.network.flows import SYN_RTO_S, handshake_seconds

NS = ("fndla", "fndlm", "fndlb")
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def build(bandwidth_mbps: float) -> None:
    a, m, b = NS
    teardown()
    for ns in NS:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", m, "link", "add", "m0", "type", "veth", "peer", "name", "a0", "netns", a)
    sh("ip", "-n", m, "link", "add", "m1", "type", "veth", "peer", "name", "b0", "netns", b)
    for ns, dev in ((a, "a0"), (m, "m0"), (m, "m1"), (b, "b0")):
        sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "gso", "off", "gro", "off", "tso", "off")
        sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("ip", "-n", a, "addr", "add", "10.99.0.1/24", "dev", "a0")
    sh("ip", "-n", b, "addr", "add", "10.99.0.2/24", "dev", "b0")
    rate, burst = f"{bandwidth_mbps * 1000:.0f}kbit", f"{max(1600, round(bandwidth_mbps * 1e6 / 8e3))}b"
    sh("tc", "-n", a, "qdisc", "replace", "dev", "a0", "root", "handle", "1:", "htb", "default", "1")
    sh("tc", "-n", a, "class", "replace", "dev", "a0", "parent", "1:", "classid", "1:1", "htb", "rate", rate,
       "ceil", rate, "burst", burst, "cburst", burst, "quantum", "1514")


def teardown() -> None:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def delay_line(delay_s: float, loss: float, seed: int) -> None:
    """Runs inside the middle namespace until killed: m0 <-> m1, each frame held delay_s, `loss` dropped."""
    rng = random.Random(seed)
    socks = {}
    for dev in ("m0", "m1"):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((dev, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        socks[dev] = s
    other = {socks["m0"]: socks["m1"], socks["m1"]: socks["m0"]}
    pending: list = []
    n = 0
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else 1.0
        ready, _, _ = select.select(list(other), [], [], timeout)
        now = time.monotonic()
        for s in ready:
            while True:
                try:
                    frame, addr = s.recvfrom(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING or rng.random() < loss:
                    continue
                n += 1
                heapq.heappush(pending, (now + delay_s, n, other[s], frame))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, out, frame = heapq.heappop(pending)
            out.send(frame)


RECEIVER = r"""
import socket, sys, time
srv = socket.create_server(("10.99.0.2", 7300)); print("ready", flush=True)
while True:
    c, _ = srv.accept(); n = int(sys.stdin.readline()); got = 0
    while got < n:
        part = c.recv(1 << 20)
        if not part: break
        got += len(part)
    print(time.monotonic(), flush=True); c.close()
"""
SENDER = r"""
import socket, sys, time
cc, n = sys.argv[1].encode(), int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc)
t0 = time.monotonic(); s.connect(("10.99.0.2", 7300)); s.sendall(bytes(n)); print(t0, flush=True)
s.shutdown(socket.SHUT_WR); s.recv(1)
"""


def counters() -> dict[str, int]:
    """The sender's TCP counters since its namespace was made (nstat's history file is per user, not per
    namespace: absolute values, differenced by the caller)."""
    out = subprocess.run(["ip", "netns", "exec", NS[0], "nstat", "-asz", *COUNTERS],
                         capture_output=True, text=True).stdout
    got = dict.fromkeys(COUNTERS, 0)
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in got:
            got[parts[0]] = int(parts[1])
    return got


def measure(cc: str, nbytes: int, receiver: subprocess.Popen) -> float:
    receiver.stdin.write(f"{nbytes}\n")
    receiver.stdin.flush()
    out = subprocess.run(["ip", "netns", "exec", NS[0], sys.executable, "-c", SENDER, cc, str(nbytes)],
                         capture_output=True, text=True, check=True).stdout
    return float(receiver.stdout.readline()) - float(out.split()[0])


HEADER = ("| cc | Mbit/s | RTT ms | loss | bytes | real s (min-max) | sim s | sim / real | retrans | RTOs | "
          "SYN retries | sim / real without SYN waits |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(cell: dict) -> tuple[str, float]:
    """A table row for a measured cell, the sim at the same RTT, and the ratio without SYN waits."""
    times, per = cell["seconds"], cell["counters"]
    mean, syn = statistics.mean(times), per["TcpExtTCPSynRetrans"]
    rtt_s, loss = cell["rtt_ms"] / 1000, cell["loss"]
    sim = calibrate("sim", nbytes=cell["bytes"], bandwidth_mbps=cell["bandwidth_mbps"], rtt_ms=cell["rtt_ms"],
                    loss=loss, congestion_control=cell["cc"])["seconds"]
    bare = (sim - (handshake_seconds(rtt_s, loss, loss) - rtt_s)) / (mean - syn * SYN_RTO_S)
    return (f"| {cell['cc']} | {cell['bandwidth_mbps']:g} | {cell['rtt_ms']:g} | {loss:.0%} | {cell['bytes']} | "
            f"{mean:.3f} ({min(times):.3f}-{max(times):.3f}) | {sim:.3f} | {sim / mean:.2f} | "
            f"{per['TcpRetransSegs']:.0f} | {per['TcpExtTCPTimeouts']:.1f} | {syn:.2f} | {bare:.2f} |"), bare


def replay(paths: list[str]) -> None:
    ratios = []
    print(HEADER)
    for path in paths:
        for line in open(path, encoding="utf-8"):
            if line.strip():
                text, bare = row(json.loads(line))
                ratios.append(bare)
                print(text)
    if ratios:
        print(f"\n{len(ratios)} cells; sim / real without SYN waits: {min(ratios):.2f}-{max(ratios):.2f}, "
              f"median {statistics.median(ratios):.2f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--replay":
        warnings.simplefilter("ignore")
        replay(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--delay-line":
        delay_line(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rtts", type=float, nargs="+", default=[20, 100])
    p.add_argument("--bandwidths", type=float, nargs="+", default=[5])
    p.add_argument("--losses", type=float, nargs="+", default=[0, 0.01, 0.05])
    p.add_argument("--cc", nargs="+", default=["cubic", "bbr"])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--jsonl", help="append each cell (times, mean counters per transfer) to this file")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    print(f"{cpu_name()}, {os.cpu_count()} cores; user-space delay line; {args.repeat} transfers per cell")
    print(HEADER)
    try:
        for bw in args.bandwidths:
            build(bw)
            receiver = subprocess.Popen(["ip", "netns", "exec", NS[2], sys.executable, "-c", RECEIVER],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            receiver.stdout.readline()
            for rtt in args.rtts:
                for loss in args.losses:
                    line = subprocess.Popen(["ip", "netns", "exec", NS[1], sys.executable, __file__, "--delay-line",
                                             str(rtt / 2000), str(loss), "1"])
                    time.sleep(0.5)
                    try:
                        measure("cubic", 10_000, receiver)  # ARP and the first connection: not timed
                        for cc in args.cc:
                            nbytes = int(bw * 1e6 / 8 * args.seconds)
                            before = counters()
                            times = [measure(cc, nbytes, receiver) for _ in range(args.repeat)]
                            per = {k: (v - before[k]) / args.repeat for k, v in counters().items()}
                            cell = {"cc": cc, "bandwidth_mbps": bw, "rtt_ms": rtt, "loss": loss, "bytes": nbytes,
                                    "seconds": times, "counters": per}
                            print(row(cell)[0], flush=True)
                            if args.jsonl:
                                with open(args.jsonl, "a", encoding="utf-8") as out:
                                    out.write(json.dumps(cell) + "\n")
                    finally:
                        line.kill()
                        line.wait()
            receiver.kill()
    finally:
        teardown()


if __name__ == "__main__":
    main()
