"""The Backend protocol: what the orchestrator asks of any network (simulated, namespaces, GNS3)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .topology import Topology


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


class Backend(Protocol):
    name: str

    def unsupported(self, events) -> str | None:
        """Why this backend cannot play these scenario events here (a skip reason), or None."""

    def build(self, topology: Topology) -> None: ...

    def transfer(self, flows: list[Flow], deadline: float = math.inf) -> list[float | None]:
        """Run the flows (and those their on_complete returns) until done or the deadline; the
        completion time of each given flow in scenario seconds, None if it did not finish."""

    def apply(self, condition: Condition) -> Any:
        """Apply a condition now; the handle undoes exactly it."""

    def revert(self, handle: Any) -> None: ...

    def reachable(self, src: str, dst: str) -> bool: ...

    def stats(self) -> NetworkStats: ...

    def teardown(self) -> None: ...
