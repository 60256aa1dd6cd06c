"""Topologies and the backends that realise them."""
from __future__ import annotations

from ..errors import UnavailableError
from .backend import Backend, Condition, Flow, LinkState, NetworkStats
from .topology import Link, Topology, build_topology


BACKENDS = ("sim", "netns", "gns3")


def make_clock(name: str, options: dict | None = None):
    """Scenario time for a backend: virtual for the simulation, wall time (compressed by the
    `time_scale` option) where real packets move."""
    from ..engine.clock import VirtualClock, WallClock
    if name == "sim":
        return VirtualClock()
    return WallClock(time_scale=float((options or {}).get("time_scale") or 1.0))


def make_backend(name: str, clock, controller, *, worker: str = "main", options: dict | None = None) -> Backend:
    """The backend called `name`, on the given clock and controller. `worker` (the xdist worker id,
    or "main") is for backends that hold machine resources: their namespaces, bridges and ports
    must be named per worker so parallel workers never collide. The simulated one holds none.
    `options` are the run's backend settings (time_scale, gns3_url, ...); each backend reads its own."""
    if name == "sim":
        from .sim import SimNetwork
        return SimNetwork(clock, controller)
    if name == "netns":
        from .netns import NetnsNetwork
        return NetnsNetwork(clock, controller, worker, options)
    if name == "gns3":
        from .gns3 import GNS3Network  # gns3fy itself is imported when it connects (the gns3 extra)
        return GNS3Network(clock, controller, worker=worker, options=options)
    raise UnavailableError(f"unknown backend {name!r} (known: sim, netns, gns3)")


__all__ = ["Backend", "Condition", "Flow", "Link", "LinkState", "NetworkStats", "Topology", "build_topology",
           "make_backend", "make_clock"]
