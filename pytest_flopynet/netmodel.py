"""The network vocabulary every layer shares, as plain data: a Topology (a networkx graph with the
names events and backends use, in Mininet's terms: hosts, switches, links with bw/delay/loss), a
Flow to carry, a Condition that changes links, the LinkState a condition leaves and the NetworkStats a
backend samples. The controller, the backends and the engine speak it; none of them owns it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import networkx as nx

from .model import client_number

SERVER = "fl_server"


@dataclass(frozen=True)
class Link:
    name: str
    a: str
    b: str
    bw_mbps: float
    delay_ms: float
    loss: float = 0.0


class Topology:
    """A built topology: the graph plus the names events and backends refer to."""

    def __init__(self, graph: nx.Graph, name: str = "topology", source: Path | None = None,
                 congestion_control: str = "cubic"):
        self.graph = graph
        self.name = name  # the scenario's name (real backends name what they make after it)
        self.source = source  # the custom topology file it was read from, if any
        self.congestion_control = congestion_control  # every host's TCP congestion control (cubic, bbr, reno)
        self.links: dict[str, Link] = {d["link"].name: d["link"] for _, _, d in graph.edges(data=True)}
        self.hosts = [n for n, d in graph.nodes(data=True) if d["kind"] == "host"]
        self.switches = [n for n, d in graph.nodes(data=True) if d["kind"] == "switch"]
        self.server = SERVER
        self.clients = sorted((h for h in self.hosts if h.startswith("client_")), key=client_number)

    def link(self, a: str, b: str) -> Link:
        return self.graph.edges[a, b]["link"]

    def links_of(self, node: str) -> list[str]:
        """Names of the links attached to a node."""
        return [self.graph.edges[node, nb]["link"].name for nb in self.graph.neighbors(node)]

    def links_in(self, group: str) -> list[str]:
        """The links a group keyword names (event targets and the monitor's per-group samples): all_links,
        client_links (each client's own links), server_links (the server's)."""
        if group == "all_links":
            return list(self.links)
        if group == "client_links":
            return [name for c in self.clients for name in self.links_of(c)]
        if group == "server_links":
            return self.links_of(self.server)
        raise KeyError(f"not a link group: {group!r}")

    def __repr__(self) -> str:
        return f"Topology({len(self.hosts)} hosts, {len(self.switches)} switches, {len(self.links)} links)"


@dataclass
class Flow:
    """`nbytes` from src to dst, starting at scenario time `start`. on_complete(t) runs at the
    arrival time of the last byte and may return follow-up flows (e.g. the upload after a download)."""

    src: str
    dst: str
    nbytes: int
    start: float
    tag: str = "fl"
    on_complete: Callable[[float], Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Condition:
    """A change to the network; conditions compose (delays add, losses compound, the lowest limit
    wins, down wins) and reverting one removes exactly its part.

    `background` adds greedy flows (src, dst) that compete with FL traffic until reverted (e.g. a
    DDoS flood). A failure (`down`) is seen by the controller `detect_after` seconds later: until
    then traffic routed over the link stalls instead of rerouting. `hosts_down` are hosts whose
    processes stop (a client's hard failure): real backends stop them; in the simulation the FL
    cluster's availability already says it."""

    links: tuple[str, ...] = ()
    extra_delay_ms: float = 0.0
    jitter_ms: float = 0.0  # +/- around the delay where the backend can vary it (netem, GNS3); sim keeps the mean
    loss: float = 0.0
    bandwidth_mbps: float | None = None
    down: bool = False
    detect_after: float = 0.0
    background: tuple[tuple[str, str], ...] = ()
    hosts_down: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkState:
    bw_mbps: float
    delay_ms: float
    loss: float
    up: bool


@dataclass
class NetworkStats:
    """A sample of the network: means over links, and per-link detail."""

    latency_ms: float
    bandwidth_utilization: float
    packet_loss: float
    links: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, links: dict[str, dict[str, Any]]) -> NetworkStats:
        """Means over per-link detail (latency_ms, loss, up, utilization): latency and loss over the links
        that are up (all of them when none is: a cut reads as the links' own values), utilisation over all."""
        up = [d for d in links.values() if d["up"]] or list(links.values())
        return cls(latency_ms=sum(d["latency_ms"] for d in up) / len(up),
                   bandwidth_utilization=sum(d["utilization"] for d in links.values()) / len(links),
                   packet_loss=sum(d["loss"] for d in up) / len(up), links=links)

    def over(self, names) -> NetworkStats | None:
        """The same means over some of the links (a group, e.g. Topology.links_in('client_links')); None
        if none of them is in the sample."""
        links = {n: self.links[n] for n in dict.fromkeys(names) if n in self.links}
        return NetworkStats.of(links) if links else None


def check_names(topology: Topology, condition: Condition) -> None:
    """A condition names only links and hosts of the topology (KeyError naming the others)."""
    unknown = [name for name in condition.links if name not in topology.links]
    unknown += [h for pair in condition.background for h in pair if h not in topology.graph]
    unknown += [h for h in condition.hosts_down if h not in topology.graph]
    if unknown:
        raise KeyError(f"unknown links or hosts: {', '.join(unknown)}")


def link_states(topology: Topology, conditions) -> dict[str, LinkState]:
    """Each link's state under the given conditions on top of its own: delays add, losses compound,
    the lowest bandwidth limit wins, down wins."""
    links = {}
    for name, link in topology.links.items():
        delay, keep, bw, up = link.delay_ms, 1.0 - link.loss, link.bw_mbps, True
        for c in conditions:
            if name in c.links:
                delay += c.extra_delay_ms
                keep *= 1.0 - c.loss
                bw = min(bw, c.bandwidth_mbps) if c.bandwidth_mbps is not None else bw
                up = up and not c.down
        links[name] = LinkState(bw, delay, 1.0 - keep, up)
    return links



CONDITION_FEATURES = ("extra_delay_ms", "jitter_ms", "loss", "bandwidth_mbps", "down", "background", "hosts_down")
