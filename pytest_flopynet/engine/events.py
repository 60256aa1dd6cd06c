"""What each event type does when it starts, and the undo that its end event runs.

A handler applies its change and returns a callable that restores exactly that change. Network
changes are Conditions on the backend and client changes are entries in per-client lists, so
overlapping events compose and ending one removes only its own part.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from ..controller.routing import Controller
from ..errors import FlopynetError
from ..fl.attacks import Tamper
from ..fl.cluster import FLCluster
from ..model import EventType, ScenarioEvent, event_clients, event_spec
from ..netmodel import Condition, Topology
from ..network.backend import Backend
from ..policy import PolicyEngine
from ..seeds import derive_seed
from .clock import Clock

Undo = Callable[[], None]
BURST_LOSS_FACTOR = 5.0  # a loss burst runs at 5x the event's mean loss rate (at most 50%)


@dataclass
class EventContext:
    backend: Backend
    topology: Topology
    cluster: FLCluster
    policy: PolicyEngine
    controller: Controller
    clock: Clock
    seed: int
    changed: Callable[[], None] = lambda: None  # a running event changed the network again: sample it
    nodes: object = None  # the nodes executor's NodeProcesses: client failures kill real processes
    server_down: list = field(default_factory=list)  # a token per server failure under way (no rounds then)
    server_crashes: list = field(default_factory=list)  # every server failure so far (a round under way loses all)


def target_links(event: ScenarioEvent, ctx: EventContext, index: int) -> tuple[str, ...]:
    """The links an event's target names, narrowed to a seeded affected_percentage subset."""
    topo, target = ctx.topology, event.target
    if target in ("all_links", "client_links", "server_links"):
        links = topo.links_in(target)
    elif target == "fl_server":
        links = topo.links_in("server_links")
    elif target == "client_group":
        links = [name for c in event_clients(event) for name in topo.links_of(c)]
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


def parameters(event: ScenarioEvent) -> dict:
    """The event's parameters with its type's defaults filled in (model.specs: the published ones)."""
    return event_spec(event.event_type).with_defaults(event.parameters)


def _condition(make: Callable[[ScenarioEvent, tuple[str, ...], EventContext], Condition]):
    def handler(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
        handle = ctx.backend.apply(make(event, target_links(event, ctx, index), ctx))
        return lambda: ctx.backend.revert(handle)
    return handler


def packet_loss(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
    """Uniform loss, or with burst_duration: bursts of that length at 5x the mean rate (at most 50%),
    separated by seeded exponential gaps whose mean keeps the long-run loss at packet_loss_rate."""
    links = target_links(event, ctx, index)
    rate = float(event.parameters["packet_loss_rate"])
    burst = event.parameters.get("burst_duration")
    if not burst or rate == 0:
        handle = ctx.backend.apply(Condition(links, loss=rate))
        return lambda: ctx.backend.revert(handle)
    bad_loss = min(BURST_LOSS_FACTOR * rate, 0.5)
    mean_gap = burst * (bad_loss / rate - 1)  # bad share of the time = rate / bad_loss
    rng = random.Random(derive_seed(ctx.seed, "bursts", index))
    state: dict = {"handle": None, "entry": None}
    sched = ctx.clock.scheduler

    def start_burst() -> None:
        state["handle"] = ctx.backend.apply(Condition(links, loss=bad_loss))
        state["entry"] = sched.at(ctx.clock.now() + burst, end_burst, "loss burst end")
        ctx.changed()

    def end_burst() -> None:
        ctx.backend.revert(state.pop("handle"))
        state["handle"] = None
        state["entry"] = sched.at(ctx.clock.now() + rng.expovariate(1 / mean_gap), start_burst, "loss burst")
        ctx.changed()

    def undo() -> None:
        state["entry"].cancel()
        if state["handle"] is not None:
            ctx.backend.revert(state["handle"])

    start_burst()
    return undo


def _clients(apply: Callable[[FLCluster, str, object], None], remove: Callable[[FLCluster, str, object], None],
             token: Callable[[ScenarioEvent], object] = lambda e: object()):
    def handler(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
        clients, tok = event_clients(event), token(event)
        for c in clients:
            apply(ctx.cluster, c, tok)
        return lambda: [remove(ctx.cluster, c, tok) for c in clients]
    return handler


def client_failure(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
    """hard_failure: away until recovery_time (or duration); intermittent: each round the client is
    present with probability reconnect_probability while the event lasts."""
    if event.target == "fl_server":
        return server_failure(event, ctx, index)
    if event.parameters["failure_type"] == "intermittent":
        p = float(parameters(event)["reconnect_probability"])
        return _clients(lambda cl, c, t: cl.clients[c].intermittent.append(p),
                        lambda cl, c, t: cl.clients[c].intermittent.remove(p))(event, ctx, index)
    away = _clients(FLCluster.go_away, FLCluster.come_back)(event, ctx, index)
    handle = ctx.backend.apply(Condition(hosts_down=tuple(event_clients(event))))
    if ctx.nodes is not None:  # the client's process crashes (SIGKILL) and is started again at recovery
        for c in event_clients(event):
            ctx.nodes.kill_client(c)

    def undo() -> None:
        ctx.backend.revert(handle)
        if ctx.nodes is not None:
            for c in event_clients(event):
                ctx.nodes.start_client(c)
        away()
    return undo


def server_failure(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
    """The FL server is down until the event ends: no round starts, and a round under way loses every
    update. The nodes executor kills the server process and starts it again, from its saved state."""
    token = ("server down", index)
    ctx.server_down.append(token)
    ctx.server_crashes.append(token)
    handle = ctx.backend.apply(Condition(hosts_down=(ctx.topology.server,)))
    if ctx.nodes is not None:
        ctx.nodes.kill_server()

    def undo() -> None:
        ctx.backend.revert(handle)
        if ctx.nodes is not None:
            ctx.nodes.start_server()
        ctx.server_down.remove(token)
    return undo


def not_yet_joined(event: ScenarioEvent) -> object:
    """The token that keeps a client_join's clients away until the event starts (set at set-up)."""
    return ("not joined", id(event))


def _tamper(kind_param: str, default: str):
    def handler(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
        params = parameters(event)
        tamper = Tamper(params.get(kind_param, default), params)
        return _clients(lambda cl, c, t: cl.add_tamper(c, tamper),
                        lambda cl, c, t: cl.remove_tamper(c, tamper))(event, ctx, index)
    return handler


def policy_change(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
    params = dict(event.parameters)
    previous = ctx.policy.set_policy(params.pop("policy_name"), **params)
    return lambda: ctx.policy.restore(previous)


def resource_constraint(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
    """cpu_slowdown_factor lengthens local training by that factor (the nodes executor: a CPU quota of
    1/factor on the client's process); memory_limit_mb excludes the clients whose training would not fit
    (see FLCluster.training_memory_mb)."""
    entries = [(ctx.cluster.clients[c], attr, float(event.parameters[param])) for c in event_clients(event)
               for param, attr in (("cpu_slowdown_factor", "slowdowns"), ("memory_limit_mb", "memory_limits_mb"))
               if param in event.parameters]
    for state, attr, value in entries:
        getattr(state, attr).append(value)
    factor = event.parameters.get("cpu_slowdown_factor")
    limits = [ctx.nodes.limit_cpu(c, float(factor)) for c in event_clients(event)] if ctx.nodes and factor else []

    def undo() -> None:
        for state, attr, value in entries:
            getattr(state, attr).remove(value)
        for lift in limits:
            lift()
    return undo


def ddos(event: ScenarioEvent, ctx: EventContext, index: int) -> Undo:
    """Flood towards the target host: request_rate_multiplier greedy TCP flows from each source (the
    `source` host, else the topology's idle hosts, else every client as a botnet). They compete with
    FL transfers for every link on their way, the server's link above all."""
    topo = ctx.topology
    victim = event.target if event.target in topo.graph else topo.server
    source = event.parameters.get("source")
    sources = [source] if source else ([h for h in topo.hosts if h.startswith("host_")] or topo.clients)
    per_source = max(1, round(float(parameters(event)["request_rate_multiplier"])))
    handle = ctx.backend.apply(Condition(background=tuple((s, victim) for s in sources if s != victim
                                                          for _ in range(per_source))))
    ctx.policy.security_events += 1
    return lambda: ctx.backend.revert(handle)


HANDLERS: dict[EventType, Callable[[ScenarioEvent, EventContext, int], Undo]] = {
    EventType.NETWORK_LATENCY_INCREASE: _condition(
        lambda e, links, ctx: Condition(links, extra_delay_ms=float(e.parameters["latency_increase_ms"]),
                                        jitter_ms=float(parameters(e)["jitter_ms"]))),
    EventType.NETWORK_PACKET_LOSS: packet_loss,
    EventType.NETWORK_BANDWIDTH_LIMIT: _condition(
        lambda e, links, ctx: Condition(links, bandwidth_mbps=float(e.parameters["bandwidth_limit_mbps"]))),
    EventType.NETWORK_PARTITION: _condition(lambda e, links, ctx: Condition(links, down=True)),
    EventType.LINK_FAILURE: _condition(lambda e, links, ctx: Condition(
        links, down=True, detect_after=float(e.parameters.get("detection_delay", ctx.controller.detection_delay)))),
    EventType.CLIENT_LEAVE: _clients(FLCluster.go_away, FLCluster.come_back),
    EventType.CLIENT_JOIN: _clients(FLCluster.come_back, FLCluster.go_away, not_yet_joined),
    EventType.CLIENT_FAILURE: client_failure,
    EventType.MODEL_POISONING: _tamper("attack_type", "gaussian_noise"),
    EventType.DATA_DRIFT: _tamper("drift_type", "label_shift"),
    EventType.POLICY_CHANGE: policy_change,
    EventType.RESOURCE_CONSTRAINT: resource_constraint,
    EventType.SECURITY_EVENT: ddos,
}
