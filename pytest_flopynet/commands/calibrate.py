"""flopynet calibrate: how long N flows of a given size take across one bottleneck link on a backend, so
the simulated network can be checked against a real one (netns here, or a user's own testbed)."""
from __future__ import annotations

import json
import sys
import warnings

from ..controller import Controller
from ..engine.clock import clock_for
from ..model import FLConfig, NetworkConfig, ScenarioConfig
from ..netmodel import Condition, Flow
from ..network import make_backend
from ..network.topology import build_topology
from . import EXIT_OK


class Bottleneck:
    """`flows` clients and the server on a star of one switch, built once for many measurements: every
    link has a one-way delay of rtt_ms / 4 (two links each way) and the rate of the measurement, and the
    server's link, the bottleneck the clients share, drops the measurement's loss."""

    def __init__(self, backend: str, *, flows: int = 1, rtt_ms: float = 1.0, congestion_control: str = "cubic"):
        config = ScenarioConfig(name="calibrate", fl_config=FLConfig(client_data_sizes=[1] * flows,
                                                                     clients_per_round=flows),
                                network_config=NetworkConfig(topology_type="star", node_count=flows + 1,
                                                             switch_count=1, link_bandwidth_mbps=1000,
                                                             base_latency_ms=rtt_ms / 4,
                                                             tcp_congestion_control=congestion_control))
        self.backend, self.rtt_ms, self.congestion_control = backend, rtt_ms, congestion_control
        self.topology = build_topology(config)
        self.clock = clock_for(backend)
        self.net = make_backend(backend, self.clock, Controller(self.topology), worker="calibrate",
                                options={"label": "calibrate"})

    def __enter__(self) -> Bottleneck:
        self.net.build(self.topology)
        self.clock.start()
        if self.net.unsupported(frozenset({"extra_delay_ms"})):  # a lab without netem: no delay of its own
            real_rtt = getattr(self.net, "rtt_ms", 0.0)
            warnings.warn(f"{self.backend} cannot add delay here: the RTT is the lab's own, {real_rtt:.2f} ms (ping), "
                          f"not {self.rtt_ms:g} ms", stacklevel=2)
            self.rtt_ms = real_rtt
        return self

    def __exit__(self, *exc) -> None:
        self.net.teardown()

    def measure(self, nbytes: int, bandwidth_mbps: float, loss: float = 0.0, flows: int | None = None) -> dict:
        """Seconds until the last of `flows` transfers of nbytes (client to server, all at once) arrives."""
        clients = self.topology.clients[:flows or len(self.topology.clients)]
        links = tuple(self.topology.links)
        handles = [self.net.apply(Condition(links=links, bandwidth_mbps=bandwidth_mbps))]
        if loss:
            handles.append(self.net.apply(Condition(links=tuple(self.topology.links_in("server_links")), loss=loss)))
        try:
            start = self.clock.now()
            done = self.net.transfer([Flow(client, self.topology.server, nbytes, start) for client in clients])
        finally:
            for handle in reversed(handles):
                self.net.revert(handle)
        seconds = [None if t is None else t - start for t in done]
        longest = None if None in seconds else max(seconds)
        return {"backend": self.backend, "congestion_control": self.congestion_control, "flows": len(clients),
                "bytes": nbytes, "bandwidth_mbps": bandwidth_mbps, "rtt_ms": self.rtt_ms, "loss": loss,
                "seconds": longest, "per_flow_seconds": seconds,
                "goodput_mbps": None if not longest else len(clients) * nbytes * 8 / longest / 1e6}


def calibrate(backend: str, *, nbytes: int, bandwidth_mbps: float, rtt_ms: float, loss: float,
              flows: int = 1, congestion_control: str = "cubic") -> dict:
    """One measurement on a Bottleneck of its own."""
    with Bottleneck(backend, flows=flows, rtt_ms=rtt_ms, congestion_control=congestion_control) as bottleneck:
        return bottleneck.measure(nbytes, bandwidth_mbps, loss)


def cmd_calibrate(args) -> int:
    result = calibrate(args.backend, nbytes=args.bytes, bandwidth_mbps=args.bandwidth_mbps, rtt_ms=args.rtt_ms,
                       loss=args.loss, flows=args.flows, congestion_control=args.congestion_control)
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
    print(f"{flows} of {args.bytes} bytes over {args.bandwidth_mbps:g} Mbit/s, {result['rtt_ms']:g} ms RTT, "
          f"{args.loss:.1%} loss, {args.congestion_control} on {args.backend}: {took}",
          file=sys.stderr if args.json == "-" else sys.stdout)
    return EXIT_OK
