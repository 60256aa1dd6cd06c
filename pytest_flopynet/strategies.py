"""Hypothesis strategies: event schedules for a scenario, and network and FL configurations.

    @given(schedule=event_schedules(config, event_types=["network_partition"], max_events=3))
    def test_fedavg_survives_partitions(scenario_runs, schedule):
        scenario_runs(schedule)          # runs the scenario with these events, checks its gates

Every drawn value is valid for the scenario it was drawn for (targets that exist in its topology,
times and durations inside its run, parameters inside their rules), and shrinks towards the gentle
end: fewer events, earlier times, shorter durations, smaller magnitudes, fewer clients affected.
"""
from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from .model import EventType, FLConfig, NetworkConfig, ScenarioConfig, ScenarioEvent, by_client_number, rule_spec
from .network import build_topology

NETWORK_EVENTS = ("network_latency_increase", "network_packet_loss", "network_bandwidth_limit",
                  "network_partition", "link_failure")
CLIENT_EVENTS = ("client_leave", "client_failure", "resource_constraint", "model_poisoning")
DEFAULT_EVENTS = NETWORK_EVENTS + ("client_failure",)


def _link_targets(config: ScenarioConfig) -> list[str]:
    """Link targets, gentlest first: one client's links, a single link, then groups of links."""
    topology = build_topology(config)
    return [*topology.clients, *sorted(topology.links), "client_links", "server_links", "all_links"]


@st.composite
def _event(draw, event_type: str, config: ScenarioConfig, *, start: float, end: float, max_duration: float,
           max_latency_ms: int, max_loss_rate: float, max_clients: int, link_targets: list[str]) -> ScenarioEvent:
    clients = [f"client_{i}" for i in range(1, config.num_clients + 1)]
    trigger = draw(st.integers(int(start), int(end)))  # whole seconds shrink towards the start
    longest = max(1, min(int(max_duration), int(config.duration_seconds - trigger)))
    duration = float(draw(st.integers(1, longest)))
    parameters: dict = {}
    target = "all_links"
    if event_type == "network_latency_increase":
        target = draw(st.sampled_from(link_targets))
        parameters = {"latency_increase_ms": draw(st.integers(1, max_latency_ms))}
    elif event_type == "network_packet_loss":
        target = draw(st.sampled_from(link_targets))
        parameters = {"packet_loss_rate": draw(st.integers(1, round(max_loss_rate * 1000))) / 1000}
    elif event_type == "network_bandwidth_limit":
        target = draw(st.sampled_from(link_targets))
        capacity = config.network_config.link_bandwidth_mbps
        severity = draw(st.integers(1, 99))  # percent of the capacity taken away
        parameters = {"bandwidth_limit_mbps": round(capacity * (100 - severity) / 100, 6)}
    elif event_type == "network_partition":
        target = "client_group"
        group = draw(st.lists(st.sampled_from(clients), min_size=1, max_size=min(max_clients, len(clients)),
                              unique=True))
        parameters = {"partitioned_clients": by_client_number(group)}
    elif event_type == "link_failure":
        target = draw(st.sampled_from([t for t in link_targets if t not in ("client_links", "server_links",
                                                                            "all_links")]))
    elif event_type == "client_failure":
        target = draw(st.sampled_from(clients))
        parameters = {"failure_type": "hard_failure"}
    elif event_type == "client_leave":
        target = draw(st.sampled_from(clients))
    elif event_type == "resource_constraint":
        target = draw(st.sampled_from(clients))
        parameters = {"cpu_slowdown_factor": float(draw(st.integers(2, 20)))}
    elif event_type == "model_poisoning":
        target = draw(st.sampled_from(clients))
        parameters = {"attack_type": "gaussian_noise", "noise_std": draw(st.integers(1, 100)) / 10}
    else:
        raise ValueError(f"event_schedules cannot draw {event_type!r} events (it draws: "
                         f"{', '.join(NETWORK_EVENTS + CLIENT_EVENTS)})")
    return ScenarioEvent(event_type=EventType(event_type), trigger_time=float(trigger), target=target,
                         parameters=parameters, duration=duration, description="drawn by Hypothesis")


def event_schedules(config: ScenarioConfig, *, event_types: Sequence[str] = DEFAULT_EVENTS, min_events: int = 0,
                    max_events: int = 4, start: float = 0.0, end: float | None = None,
                    max_duration: float | None = None, max_latency_ms: int = 200, max_loss_rate: float = 0.2,
                    max_clients: int | None = None) -> st.SearchStrategy[list[ScenarioEvent]]:
    """Lists of events for `config`, sorted by trigger time.

    event_types: the kinds drawn (default: the network events and hard client failures);
    start/end: the window trigger times fall in (default: the whole run); max_duration: the longest
    event (default: a quarter of the run); max_latency_ms, max_loss_rate: magnitude bounds;
    max_clients: most clients one partition takes."""
    end = config.duration_seconds - 1 if end is None else end
    if not 0 <= start <= end < config.duration_seconds:
        raise ValueError(f"event_schedules: need 0 <= start <= end < the run's {config.duration_seconds:g} s, "
                         f"got start={start:g}, end={end:g}")
    max_duration = max_duration if max_duration is not None else max(1.0, config.duration_seconds / 4)
    link_targets = _link_targets(config)
    one = st.sampled_from(list(event_types)).flatmap(lambda kind: _event(
        kind, config, start=start, end=end, max_duration=max_duration, max_latency_ms=max_latency_ms,
        max_loss_rate=max_loss_rate, max_clients=max_clients or config.num_clients, link_targets=link_targets))
    return st.lists(one, min_size=min_events, max_size=max_events).map(
        lambda events: sorted(events, key=lambda e: e.trigger_time))


def network_configs(*, topology_types: Sequence[str] = ("star", "mesh", "tree"), max_switches: int = 4,
                    nodes: int = 5) -> st.SearchStrategy[NetworkConfig]:
    """Topologies for `nodes` hosts (the server and the clients): shapes, switch counts, link speeds
    and delays; shrinks towards a star of one switch on fast, short links."""
    return st.builds(
        NetworkConfig, topology_type=st.sampled_from(list(topology_types)), node_count=st.just(nodes),
        switch_count=st.integers(1, max_switches), link_bandwidth_mbps=st.sampled_from([100, 50, 10, 1]),
        base_latency_ms=st.integers(1, 50))


def _most_byzantine(method: str, n: int) -> int:
    """The largest f the rule's bound (model.specs: n >= a f + b) allows with n updates per round."""
    a, b = rule_spec(method).min_updates
    return max(0, (n - b) // a)


_RULES = {  # rule -> strategy of its parameters, for n clients (within the bounds of model.specs)
    "fedavg": lambda n: st.just({}),
    "fedprox": lambda n: st.builds(lambda mu: {"mu": mu / 100}, st.integers(0, 100)),
    "median": lambda n: st.just({}),
    "trimmed_mean": lambda n: st.builds(lambda b: {"beta": b / 10}, st.integers(0, 4)),
    "krum": lambda n: st.builds(lambda f: {"f": f}, st.integers(0, _most_byzantine("krum", n))),
}


@st.composite
def fl_configs(draw, *, clients: int = 4, aggregation_methods: Sequence[str] = tuple(_RULES),
               max_rounds: int = 5) -> FLConfig:
    """Small FL configurations on the bundled digits (logistic regression or an MLP): rounds,
    clients per round, epochs, learning rate, data sizes, split and a valid aggregation rule."""
    method = draw(st.sampled_from(list(aggregation_methods)))
    per_round = clients if rule_spec(method).min_updates[0] else draw(st.integers(1, clients))  # robust: all
    return FLConfig(
        model_architecture=draw(st.sampled_from(["logreg", "mlp"])), total_rounds=draw(st.integers(1, max_rounds)),
        clients_per_round=per_round, local_epochs=draw(st.integers(1, 3)),
        learning_rate=draw(st.sampled_from([0.1, 0.05, 0.2, 0.01])),
        data_distribution=draw(st.sampled_from(["iid", "non_iid"])),
        client_data_sizes=draw(st.lists(st.integers(20, 80), min_size=clients, max_size=clients)),
        aggregation_method=method, aggregation_parameters=draw(_RULES[method](clients)))


@st.composite
def scenario_configs(draw, *, clients: int = 4, duration_minutes: float = 5, max_events: int = 3,
                     event_types: Sequence[str] = DEFAULT_EVENTS) -> ScenarioConfig:
    """Whole scenarios: an FL configuration, a topology for it, and a schedule of events."""
    config = ScenarioConfig(name="drawn", duration_minutes=duration_minutes,
                            fl_config=draw(fl_configs(clients=clients)),
                            network_config=draw(network_configs(nodes=clients + 1)))
    config.events = draw(event_schedules(config, event_types=event_types, max_events=max_events))
    return config
