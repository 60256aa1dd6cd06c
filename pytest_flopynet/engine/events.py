"""What each event type does when it starts, and the undo that its end event runs.

A handler applies its change and returns a callable that restores exactly that change; network
changes are Conditions on the backend, which compose, so overlapping events never clobber each other.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from ..errors import FlopynetError
from ..fl.cluster import FLCluster
from ..model import EventType, ScenarioEvent
from ..network.backend import Backend, Condition
from ..network.topology import Topology
from ..seeds import derive_seed

Undo = Callable[[], None]


@dataclass
class EventContext:
    backend: Backend
    topology: Topology
    cluster: FLCluster
    seed: int


def target_links(event: ScenarioEvent, ctx: EventContext, index: int) -> tuple[str, ...]:
    """The links an event's target names, narrowed to a seeded affected_percentage subset."""
    topo, target = ctx.topology, event.target
    if target == "all_links":
        links = list(topo.links)
    elif target == "client_links":
        links = [name for c in topo.clients for name in topo.links_of(c)]
    elif target in ("server_links", "fl_server"):
        links = topo.links_of(topo.server)
    elif target == "client_group":
        links = [name for c in target_clients(event) for name in topo.links_of(c)]
    elif target in topo.links:
        links = [target]
    elif target in topo.graph:
        links = topo.links_of(target)
    else:
        raise FlopynetError(f"event {event.event_type} at {event.trigger_time:g} s: unknown target {target!r}")
    share = event.parameters.get("affected_percentage")
    if share is not None:
        rng = random.Random(derive_seed(ctx.seed, "event", index))
        links = sorted(rng.sample(sorted(links), max(1, round(share * len(links)))))
    return tuple(links)


def target_clients(event: ScenarioEvent) -> list[str]:
    params = event.parameters
    if event.target == "client_group":
        return list(params.get("partitioned_clients") or params.get("clients") or [])
    return list(params.get("clients") or [event.target])


def _network(make: Callable[[ScenarioEvent, tuple[str, ...]], Condition]):
    def handler(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
        handle = ctx.backend.apply(make(event, target_links(event, ctx, index)))
        return lambda: ctx.backend.revert(handle)
    return handler


def _availability(available: bool):
    def handler(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
        clients = target_clients(event)
        before = {c: ctx.cluster.clients[c].available for c in clients}
        for c in clients:
            ctx.cluster.set_available(c, available)
        return lambda: [ctx.cluster.set_available(c, was) for c, was in before.items()]
    return handler


HANDLERS: dict[EventType, Callable[[ScenarioEvent, EventContext, int], Undo]] = {
    EventType.NETWORK_LATENCY_INCREASE: _network(
        lambda e, links: Condition(links, extra_delay_ms=float(e.parameters["latency_increase_ms"]))),
    EventType.NETWORK_PACKET_LOSS: _network(
        lambda e, links: Condition(links, loss=float(e.parameters["packet_loss_rate"]))),
    EventType.NETWORK_BANDWIDTH_LIMIT: _network(
        lambda e, links: Condition(links, bandwidth_mbps=float(e.parameters["bandwidth_limit_mbps"]))),
    EventType.NETWORK_PARTITION: _network(lambda e, links: Condition(links, down=True)),
    EventType.LINK_FAILURE: _network(lambda e, links: Condition(links, down=True)),
    EventType.CLIENT_LEAVE: _availability(False),
    EventType.CLIENT_JOIN: _availability(True),
    EventType.CLIENT_FAILURE: _availability(False),
}


def unsupported(event: ScenarioEvent) -> str | None:
    """Why this version cannot run the event, or None."""
    if event.event_type not in HANDLERS:
        return f"event type {event.event_type} has no effect in this version yet"
    if event.event_type == EventType.CLIENT_FAILURE and event.parameters.get("failure_type") == "intermittent":
        return "client_failure of failure_type intermittent has no effect in this version yet"
    return None
