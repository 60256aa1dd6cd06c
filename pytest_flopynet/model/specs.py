"""One spec per aggregation rule and per event type: what a scenario file may say about it (its
parameters with their JSON Schema, defaults and bounds) and what the rest of the package does with it
(targets, duration, the network conditions it needs, the clients' side of a rule). Validation, the
published schema, the cluster, the node program, the event handlers and the Hypothesis strategies all
read these tables; nothing else spells a rule's or an event's knowledge out again.

Plain data, so validation needs neither torch nor a network. Other packages add rules with
`register_rule` (fl.aggregation registers the implementation beside it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import EventType, ScenarioEvent

REQUIRED = object()  # a parameter without a default


@dataclass(frozen=True)
class Param:
    """One parameter: its JSON Schema, its default (REQUIRED: none, the file must give it), a note."""

    schema: dict[str, Any]
    default: Any = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def published(self) -> dict[str, Any]:
        """The schema as the published JSON Schema shows it: with its default and note."""
        out = dict(self.schema)
        if self.default is not REQUIRED and self.default is not None:
            out["default"] = self.default
        if self.doc:
            out["description"] = self.doc
        return out


def _with_defaults(parameters: dict[str, Param], given: dict[str, Any]) -> dict[str, Any]:
    out = {name: p.default for name, p in parameters.items() if p.default is not REQUIRED and p.default is not None}
    out.update(given)
    return out


_num = {"type": "number"}
_fraction = {"type": "number", "minimum": 0, "maximum": 1}
_positive = {"type": "number", "exclusiveMinimum": 0}
_nonneg = {"type": "number", "minimum": 0}
_share = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
_count = {"type": "integer", "minimum": 0}
_clients = {"type": "array", "items": {"type": "string", "pattern": r"^client_[1-9][0-9]*$"}, "minItems": 1}


# ----------------------------------------------------------------------------- aggregation rules

@dataclass(frozen=True)
class AggregationSpec:
    """An aggregation rule: its parameters, how many updates it needs, and what it asks of clients."""

    name: str
    doc: str
    parameters: dict[str, Param] = field(default_factory=dict)
    min_updates: tuple[int, int] = (0, 1)  # (a, b): it aggregates n >= a * f + b updates
    bound: str = ""  # the same bound as users read it, e.g. "n > 2f + 2"
    proximal: bool = False  # clients add (mu / 2) ||w - w_global||^2 to their loss (FedProx)
    control_variates: bool = False  # clients correct their gradients by c - c_i (SCAFFOLD)
    keeps_partial_work: bool = False  # a straggler's partial work is aggregated, not dropped (FedProx)

    def with_defaults(self, given: dict[str, Any]) -> dict[str, Any]:
        return _with_defaults(self.parameters, given)

    def minimum_updates(self, given: dict[str, Any]) -> int:
        """Fewest updates the rule can aggregate with these parameters."""
        a, b = self.min_updates
        return a * int(given.get("f", 0)) + b

    def proximal_mu(self, given: dict[str, Any]) -> float:
        """The proximal term's weight the clients train with (0: none)."""
        return float(self.with_defaults(given).get("mu", 0.0)) if self.proximal else 0.0


_f = Param({"type": "integer", "minimum": 0}, REQUIRED, "Byzantine clients to tolerate.")
_server_lr = Param(_positive, 1.0, "Server learning rate.")


def _fedopt(name: str, doc: str) -> AggregationSpec:
    return AggregationSpec(name, doc, {"server_lr": Param(_positive, 0.01, "Server learning rate."),
                                       "beta1": Param(_fraction, 0.9), "beta2": Param(_fraction, 0.99),
                                       "tau": Param(_positive, 1e-3, "Adaptivity (keeps the step finite).")})


AGGREGATION_RULES: dict[str, AggregationSpec] = {spec.name: spec for spec in [
    AggregationSpec("fedavg", "Sample-weighted mean of the client models (McMahan et al. 2017)."),
    AggregationSpec("fedprox", "FedAvg with a proximal term on the clients and their partial work kept "
                    "(Li et al. 2020).", {"mu": Param(_nonneg, 0.0, "Weight of the proximal term.")},
                    proximal=True, keeps_partial_work=True),
    AggregationSpec("scaffold", "Control variates correct client drift (Karimireddy et al. 2020).",
                    {"server_lr": _server_lr}, control_variates=True),
    AggregationSpec("fedavgm", "FedAvg with server momentum (Hsu et al. 2019).",
                    {"server_lr": _server_lr, "momentum": Param(_fraction, 0.9)}),
    _fedopt("fedadam", "Adam on the server's pseudo-gradient (Reddi et al. 2021)."),
    _fedopt("fedyogi", "Yogi on the server's pseudo-gradient (Reddi et al. 2021)."),
    AggregationSpec("krum", "The update closest to its n - f - 2 nearest others (Blanchard et al. 2017).",
                    {"f": _f}, (2, 3), "n > 2f + 2"),
    AggregationSpec("multikrum", "Mean of the m updates with the best Krum scores (Blanchard et al. 2017).",
                    {"f": _f, "m": Param({"type": "integer", "minimum": 1}, None, "Updates averaged (default n - f).")},
                    (2, 3), "n > 2f + 2"),
    AggregationSpec("median", "Coordinate-wise median (Yin et al. 2018)."),
    AggregationSpec("trimmed_mean", "Coordinate-wise trimmed mean (Yin et al. 2018).",
                    {"beta": Param({"type": "number", "minimum": 0, "exclusiveMaximum": 0.5}, 0.1,
                                   "Share trimmed at each end.")}),
    AggregationSpec("bulyan", "Krum selection, then a trimmed mean around the median (El Mhamdi et al. 2018).",
                    {"f": _f}, (4, 3), "n >= 4f + 3"),
]}


def register_rule(spec: AggregationSpec) -> AggregationSpec:
    """Make a rule's spec known to validation (fl.aggregation.register_rule also registers its code)."""
    AGGREGATION_RULES[spec.name] = spec
    return spec


def rule_spec(method: str) -> AggregationSpec:
    """The spec of an aggregation_method (KeyError if unknown)."""
    return AGGREGATION_RULES[method]


# ---------------------------------------------------------------------------------- event types

TARGET_KEYWORDS = ("all_links", "client_links", "server_links", "client_group", "fl_server", "policy_engine")


@dataclass(frozen=True)
class EventSpec:
    """An event type: its parameters, what its target names, and the network conditions it needs."""

    event_type: EventType
    doc: str
    parameters: dict[str, Param]
    acts_on: str  # "links", "clients", "policy" or "host": what its target must name
    needs: tuple[str, ...] = ()  # netmodel.CONDITION_FEATURES it applies (backends say which they lack)
    duration_parameter: str | None = None  # gives the event its end when `duration` is not set

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(name for name, p in self.parameters.items() if p.required)

    def with_defaults(self, given: dict[str, Any]) -> dict[str, Any]:
        return _with_defaults(self.parameters, given)


_affected = Param(_share, None, "Seeded share of the targeted links affected (default: all).")
_targets = Param(_clients, None, "The clients, when the target is client_group.")

EVENT_SPECS: dict[EventType, EventSpec] = {spec.event_type: spec for spec in [
    EventSpec(EventType.NETWORK_LATENCY_INCREASE, "Adds delay to the targeted links.",
              {"latency_increase_ms": Param(_nonneg, REQUIRED, "Added one-way delay."),
               "jitter_ms": Param(_nonneg, 0.0, "+/- variation around the delay (real backends)."),
               "affected_percentage": _affected}, "links", ("extra_delay_ms", "jitter_ms")),
    EventSpec(EventType.NETWORK_PACKET_LOSS, "Drops packets on the targeted links.",
              {"packet_loss_rate": Param({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, REQUIRED,
                                         "Long-run share of packets lost."),
               "burst_duration": Param(_positive, None, "Seconds per loss burst at 5x the rate (default: uniform)."),
               "affected_percentage": _affected}, "links", ("loss",)),
    EventSpec(EventType.NETWORK_BANDWIDTH_LIMIT, "Caps the targeted links' bandwidth.",
              {"bandwidth_limit_mbps": Param(_positive, REQUIRED, "Capacity during the event."),
               "affected_percentage": _affected}, "links", ("bandwidth_mbps",)),
    EventSpec(EventType.NETWORK_PARTITION, "Cuts the targeted clients' links.",
              {"partitioned_clients": Param(_clients, None, "Clients cut off (target client_group)."),
               "partition_duration": Param(_positive, None, "Seconds until the partition heals.")},
              "links", ("down",), "partition_duration"),
    EventSpec(EventType.LINK_FAILURE, "Takes links down; the controller reroutes once it notices.",
              {"detection_delay": Param(_nonneg, 0.0, "Seconds before the controller notices.")}, "links", ("down",)),
    EventSpec(EventType.CLIENT_JOIN, "Clients away until the event starts join then.",
              {"clients": _targets}, "clients"),
    EventSpec(EventType.CLIENT_LEAVE, "Clients leave (until the event ends).", {"clients": _targets}, "clients"),
    EventSpec(EventType.CLIENT_FAILURE, "Clients crash, or come and go each round; on fl_server the FL server "
                                        "crashes (no rounds until recovery_time; the nodes executor kills and "
                                        "restarts its process, which resumes from its saved round).",
              {"failure_type": Param({"enum": ["hard_failure", "intermittent"]}, REQUIRED),
               "recovery_time": Param(_positive, None, "Seconds until a failed client is back."),
               "reconnect_probability": Param(_fraction, 0.5, "Intermittent: chance of being present per round."),
               "clients": _targets}, "clients", ("hosts_down",), "recovery_time"),
    EventSpec(EventType.MODEL_POISONING, "Clients send poisoned updates or train on poisoned data.",
              {"attack_type": Param({"enum": ["label_flipping", "gaussian_noise", "sign_flipping", "scaling"]},
                                    REQUIRED),
               "attack_intensity": Param(_fraction, 1.0, "label_flipping: share of labels flipped."),
               "noise_std": Param(_nonneg, 1.0, "gaussian_noise: standard deviation added to the update."),
               "scale": Param(_positive, 10.0, "scaling: factor on the update."),
               "clients": _targets}, "clients"),
    EventSpec(EventType.DATA_DRIFT, "Clients' data drifts.",
              {"drift_type": Param({"enum": ["label_shift", "feature_shift"]}, "label_shift"),
               "severity": Param(_fraction, 0.5, "Share relabelled, or standard deviations moved."),
               "clients": _targets}, "clients"),
    EventSpec(EventType.POLICY_CHANGE, "Switches the policy engine's policy.",
              {"policy_name": Param({"type": "string", "minLength": 1}, REQUIRED),
               "detection_threshold": Param(_nonneg, None, "Anomaly score that flags an update."),
               "quarantine_duration": Param(_nonneg, None, "Seconds a flagged client is kept out."),
               "enabled": Param({"type": "boolean"}, None)}, "policy"),
    EventSpec(EventType.RESOURCE_CONSTRAINT, "Slows clients down or limits their memory.",
              {"cpu_slowdown_factor": Param({"type": "number", "minimum": 1}, None, "Local training takes this much longer."),
               "memory_limit_mb": Param(_positive, None, "Clients whose training does not fit are out."),
               "clients": _targets}, "clients"),
    EventSpec(EventType.SECURITY_EVENT, "A DDoS flood towards a host.",
              {"attack_type": Param({"enum": ["ddos"]}, REQUIRED),
               "request_rate_multiplier": Param({"type": "number", "minimum": 1}, 1,
                                                "Greedy flows per source."),
               "attack_duration": Param(_positive, None, "Seconds the flood lasts."),
               "source": Param({"type": "string"}, None, "The flooding host (default: idle hosts, else clients).")},
              "host", ("background",), "attack_duration"),
]}


def event_spec(event_type: EventType | str) -> EventSpec:
    return EVENT_SPECS[EventType(event_type)]


def event_duration(event: ScenarioEvent) -> float | None:
    """Seconds the event lasts: `duration`, else its type's duration parameter (the seed's files
    give partition_duration, recovery_time or attack_duration)."""
    if event.duration is not None:
        return float(event.duration)
    name = event_spec(event.event_type).duration_parameter
    if name and name in event.parameters:
        return float(event.parameters[name])
    return None


def event_clients(event: ScenarioEvent) -> list[str]:
    """The clients a client event acts on: client_group's list, else `clients`, else the target."""
    params = event.parameters
    if event.target == "client_group":
        return list(params.get("partitioned_clients") or params.get("clients") or [])
    return list(params.get("clients") or [event.target])


def client_number(name: str) -> int:
    """Sort key of a client name: client_2 before client_10."""
    return int(name.split("_")[1])


def by_client_number(names) -> list[str]:
    """Client names in their numeric order."""
    return sorted(names, key=client_number)
