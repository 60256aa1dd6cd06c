"""Topologies and the backends that realise them."""
from __future__ import annotations

from ..errors import UnavailableError
from .backend import Backend, Condition, Flow, LinkState, NetworkStats
from .topology import Link, Topology, build_topology


def make_backend(name: str, clock, controller, *, worker: str = "main") -> Backend:
    """The backend called `name`, on the given clock and controller. `worker` (the xdist worker id,
    or "main") is for backends that hold machine resources: their namespaces, bridges and ports
    must be named per worker so parallel workers never collide. The simulated one holds none."""
    if name == "sim":
        from .sim import SimNetwork
        return SimNetwork(clock, controller)
    if name in ("netns", "gns3"):
        raise UnavailableError(f"backend {name!r} is not part of this version yet; use backend 'sim'")
    raise UnavailableError(f"unknown backend {name!r} (known: sim, netns, gns3)")


__all__ = ["Backend", "Condition", "Flow", "Link", "LinkState", "NetworkStats", "Topology", "build_topology",
           "make_backend"]
