"""Metric time series with scenario timestamps: one record per round, the start and end of every
event, and network samples every monitor interval, at every round's start and end and just after
every event starts or ends (one sample per instant)."""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from typing import Any

# The seed's sampled metric names.
SAMPLED = ("network_latency_ms", "network_bandwidth_utilization", "network_packet_loss", "fl_active_clients",
           "policy_violations", "security_events")
# The link metrics (means over links) are also sampled per group of links, as `<metric>.<group>`.
LINK_METRICS = SAMPLED[:3]
LINK_GROUPS = ("client_links", "server_links")


def group_metric(metric: str, group: str) -> str:
    """A link metric over one group of links only: network_latency_ms.client_links."""
    return f"{metric}.{group}"


@dataclass
class RoundRecord:
    round: int
    start_time: float
    end_time: float
    participants: list[str]
    stragglers: list[str]
    bytes_up: int
    bytes_down: int
    accuracy: float
    loss: float
    rejected: list[str] = field(default_factory=list)  # returned, but dropped by the policy engine
    aggregated: bool = True  # False: too few updates for the rule, the global model was kept
    # the nodes executor's (what its processes measured; left out of the results when empty):
    failed: list[str] = field(default_factory=list)  # selected, but not connected or lost mid-round
    client_times: dict[str, dict[str, float]] = field(default_factory=dict)  # transfer and training seconds


OPTIONAL_ROUND_FIELDS = ("failed", "client_times")


@dataclass
class EventRecord:
    event_type: str
    target: str
    start_time: float
    end_time: float | None = None
    description: str = ""


@dataclass
class Collector:
    monitor_interval: float = 10.0
    rounds: list[RoundRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {m: [] for m in SAMPLED})

    def record_round(self, record: RoundRecord) -> None:
        self.rounds.append(record)

    def sample(self, t: float, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.samples.setdefault(name, []).append((t, float(value)))

    def series(self, name: str) -> tuple[list[float], list[float]]:
        """(times, values) of a sampled metric, or of a per-round field (accuracy, loss, ...) at round ends."""
        if name in self.samples:
            pairs = self.samples[name]
            return [t for t, _ in pairs], [v for _, v in pairs]
        return [r.end_time for r in self.rounds], [float(getattr(r, name)) for r in self.rounds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": [{k: v for k, v in asdict(r).items() if v or k not in OPTIONAL_ROUND_FIELDS} for r in self.rounds],
            "events": [asdict(e) for e in self.events],
            "samples": {name: [list(p) for p in pairs] for name, pairs in self.samples.items()},
        }

    def to_csv(self) -> str:
        """One row per round, then one row per sample: long format, easy to load in pandas."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["kind", "time", "metric", "value", "round"])
        for r in self.rounds:
            for metric in ("accuracy", "loss", "bytes_up", "bytes_down"):
                w.writerow(["round", r.end_time, metric, getattr(r, metric), r.round])
            w.writerow(["round", r.end_time, "participants", len(r.participants), r.round])
            w.writerow(["round", r.end_time, "round_duration", r.end_time - r.start_time, r.round])
        for name, pairs in self.samples.items():
            for t, v in pairs:
                w.writerow(["sample", t, name, v, ""])
        return out.getvalue()
