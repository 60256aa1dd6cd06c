"""Topologies and the backends that realise them.

Backends register by name in BACKENDS ("module:Class", imported on first use) or, from another
package, in the entry-point group `pytest_flopynet.backends` (name = "module:Class"). A backend class
takes (clock, controller, *, worker, options) and implements network.backend.Backend."""
from __future__ import annotations

from ..errors import UnavailableError
from ..registry import Registry
from .backend import Backend, Condition, Flow, LinkState, NetworkStats
from .topology import Link, Topology, build_topology

BACKENDS = Registry("backend", "pytest_flopynet.backends", {
    "sim": "pytest_flopynet.network.sim:SimNetwork",  # embedded, virtual clock
    "netns": "pytest_flopynet.network.netns:NetnsNetwork",  # Linux namespaces, Open vSwitch, Ryu
    "gns3": "pytest_flopynet.network.gns3:GNS3Network",  # gns3fy against a GNS3 server (the gns3 extra)
})


def make_backend(name: str, clock, controller, *, worker: str = "main", options: dict | None = None) -> Backend:
    """The backend called `name`, on the given clock and controller. `worker` (the xdist worker id,
    or "main") is for backends that hold machine resources: their namespaces, bridges and ports
    must be named per worker so parallel workers never collide. The simulated one holds none.
    `options` are the run's backend settings (time_scale, gns3_url, ...); each backend reads its own."""
    if name not in BACKENDS:
        raise UnavailableError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS.load(name)(clock, controller, worker=worker, options=dict(options or {}))


__all__ = ["BACKENDS", "Backend", "Condition", "Flow", "Link", "LinkState", "NetworkStats", "Topology",
           "build_topology", "make_backend"]
