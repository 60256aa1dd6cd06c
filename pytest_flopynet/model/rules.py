"""What scenario files may say beyond their shape: event parameters, targets, aggregation
parameters. Plain data (JSON Schema snippets), so validation needs neither torch nor a network."""
from __future__ import annotations

from .config import EventType

_num = {"type": "number"}
_fraction = {"type": "number", "minimum": 0, "maximum": 1}
_positive = {"type": "number", "exclusiveMinimum": 0}
_nonneg = {"type": "number", "minimum": 0}
_share = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
_clients = {"type": "array", "items": {"type": "string", "pattern": r"^client_[1-9][0-9]*$"}, "minItems": 1}

# event type -> (parameter schemas, required parameters)
EVENT_PARAMETERS: dict[EventType, tuple[dict[str, dict], tuple[str, ...]]] = {
    EventType.NETWORK_LATENCY_INCREASE: (
        {"latency_increase_ms": _nonneg, "jitter_ms": _nonneg, "affected_percentage": _share},
        ("latency_increase_ms",)),
    EventType.NETWORK_PACKET_LOSS: (
        {"packet_loss_rate": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
         "burst_duration": _positive, "affected_percentage": _share},
        ("packet_loss_rate",)),
    EventType.NETWORK_BANDWIDTH_LIMIT: (
        {"bandwidth_limit_mbps": _positive, "affected_percentage": _share}, ("bandwidth_limit_mbps",)),
    EventType.NETWORK_PARTITION: (
        {"partitioned_clients": _clients, "partition_duration": _positive}, ()),
    EventType.LINK_FAILURE: ({"detection_delay": _nonneg}, ()),
    EventType.CLIENT_JOIN: ({"clients": _clients}, ()),
    EventType.CLIENT_LEAVE: ({"clients": _clients}, ()),
    EventType.CLIENT_FAILURE: (
        {"failure_type": {"enum": ["hard_failure", "intermittent"]}, "recovery_time": _positive,
         "reconnect_probability": _fraction, "clients": _clients},
        ("failure_type",)),
    EventType.MODEL_POISONING: (
        {"attack_type": {"enum": ["label_flipping", "gaussian_noise", "sign_flipping", "scaling"]},
         "attack_intensity": _fraction, "noise_std": _nonneg, "scale": _positive, "clients": _clients},
        ("attack_type",)),
    EventType.DATA_DRIFT: (
        {"drift_type": {"enum": ["label_shift", "feature_shift"]}, "severity": _fraction, "clients": _clients},
        ()),
    EventType.POLICY_CHANGE: (
        {"policy_name": {"type": "string", "minLength": 1}, "detection_threshold": _nonneg,
         "quarantine_duration": _nonneg, "enabled": {"type": "boolean"}},
        ("policy_name",)),
    EventType.RESOURCE_CONSTRAINT: (
        {"cpu_slowdown_factor": {"type": "number", "minimum": 1}, "memory_limit_mb": _positive,
         "clients": _clients}, ()),
    EventType.SECURITY_EVENT: (
        {"attack_type": {"enum": ["ddos"]}, "request_rate_multiplier": {"type": "number", "minimum": 1},
         "attack_duration": _positive, "source": {"type": "string"}},
        ("attack_type",)),
}

# Parameters that give an event its end time when `duration` is not set.
DURATION_PARAMETERS = ("partition_duration", "recovery_time", "attack_duration")

TARGET_KEYWORDS = ("all_links", "client_links", "server_links", "client_group", "fl_server", "policy_engine")

# What an event's target may name: links (a keyword, a link, or a node whose links are meant),
# clients (client_<n>, or client_group with a clients / partitioned_clients list), the policy
# engine, or a host.
CLIENT_EVENTS = (EventType.CLIENT_JOIN, EventType.CLIENT_LEAVE, EventType.CLIENT_FAILURE, EventType.MODEL_POISONING,
                 EventType.DATA_DRIFT, EventType.RESOURCE_CONSTRAINT)

# aggregation method -> (parameter schemas, required parameters)
AGGREGATION_PARAMETERS: dict[str, tuple[dict[str, dict], tuple[str, ...]]] = {
    "fedavg": ({}, ()),
    "fedprox": ({"mu": _nonneg}, ()),
    "scaffold": ({"server_lr": _positive}, ()),
    "fedavgm": ({"server_lr": _positive, "momentum": _fraction}, ()),
    "fedadam": ({"server_lr": _positive, "beta1": _fraction, "beta2": _fraction, "tau": _positive}, ()),
    "fedyogi": ({"server_lr": _positive, "beta1": _fraction, "beta2": _fraction, "tau": _positive}, ()),
    "krum": ({"f": {"type": "integer", "minimum": 0}}, ("f",)),
    "multikrum": ({"f": {"type": "integer", "minimum": 0}, "m": {"type": "integer", "minimum": 1}}, ("f",)),
    "median": ({}, ()),
    "trimmed_mean": ({"beta": {"type": "number", "minimum": 0, "exclusiveMaximum": 0.5}}, ()),
    "bulyan": ({"f": {"type": "integer", "minimum": 0}}, ("f",)),
}


def event_duration(event) -> float | None:
    """Seconds the event lasts: `duration`, else the seed's duration-like parameter."""
    if event.duration is not None:
        return float(event.duration)
    for name in DURATION_PARAMETERS:
        if name in event.parameters:
            return float(event.parameters[name])
    return None
