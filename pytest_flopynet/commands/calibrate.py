"""flopynet calibrate: how long N flows of a given size take across one bottleneck link on a backend, so
the simulated network can be checked against a real one (netns here, or a user's own testbed)."""
from __future__ import annotations

import json
import sys

from ..controller import Controller
from ..engine.clock import clock_for
from ..model import FLConfig, NetworkConfig, ScenarioConfig
from ..netmodel import Condition, Flow
from ..network import make_backend
from ..network.topology import build_topology
from . import EXIT_OK


def calibrate(backend: str, *, nbytes: int, bandwidth_mbps: float, rtt_ms: float, loss: float,
              flows: int = 1) -> dict:
    """`flows` clients each send `nbytes` at once to the server over a star of one switch: every link
    runs at `bandwidth_mbps` with a one-way delay of rtt_ms / 4 (two links each way), and the server's
    link, the bottleneck they share, drops `loss` of its packets."""
    config = ScenarioConfig(name="calibrate", fl_config=FLConfig(client_data_sizes=[1] * flows,
                                                                 clients_per_round=flows),
                            network_config=NetworkConfig(topology_type="star", node_count=flows + 1, switch_count=1,
                                                         link_bandwidth_mbps=bandwidth_mbps,
                                                         base_latency_ms=rtt_ms / 4))
    topology = build_topology(config)
    clock = clock_for(backend)
    net = make_backend(backend, clock, Controller(topology), worker="calibrate", options={"label": "calibrate"})
    net.build(topology)
    try:
        clock.start()
        if loss:
            net.apply(Condition(links=tuple(topology.links_in("server_links")), loss=loss))
        start = clock.now()
        done = net.transfer([Flow(client, topology.server, nbytes, start) for client in topology.clients])
    finally:
        net.teardown()
    seconds = [None if t is None else t - start for t in done]
    longest = max((s for s in seconds if s is not None), default=None)
    return {"backend": backend, "flows": flows, "bytes": nbytes, "bandwidth_mbps": bandwidth_mbps, "rtt_ms": rtt_ms,
            "loss": loss, "seconds": longest, "per_flow_seconds": seconds,
            "goodput_mbps": None if not longest or None in seconds else flows * nbytes * 8 / longest / 1e6}


def cmd_calibrate(args) -> int:
    result = calibrate(args.backend, nbytes=args.bytes, bandwidth_mbps=args.bandwidth_mbps, rtt_ms=args.rtt_ms,
                       loss=args.loss, flows=args.flows)
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
            return EXIT_OK
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    flows = f"{args.flows} flows" if args.flows > 1 else "1 flow"
    took = "did not finish" if result["goodput_mbps"] is None else \
        f"{result['seconds']:.3f} s, goodput {result['goodput_mbps']:.2f} Mbit/s"
    print(f"{flows} of {args.bytes} bytes over {args.bandwidth_mbps:g} Mbit/s, {args.rtt_ms:g} ms RTT, "
          f"{args.loss:.1%} loss on {args.backend}: {took}", file=sys.stderr if args.json == "-" else sys.stdout)
    return EXIT_OK
