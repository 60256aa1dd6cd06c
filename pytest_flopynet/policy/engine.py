"""Screens each round's client updates under the active policy: flags anomalous updates with robust
statistics, drops them, quarantines their clients, and keeps per-client trust scores over time.

The simulator knows which clients are really attacking, so it also measures the policy itself:
attack_detection_rate and false_positive_rate over the updates screened while a detector was on.
"""
from __future__ import annotations

import math
from functools import cache
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import FlopynetError
from ..model import client_number

BUILTIN = Path(__file__).with_name("policies.yaml")
DETECTORS = ("none", "robust_zscore")
TRUST_DECAY = 0.8  # trust <- 0.8 trust + 0.2 (0 if flagged else 1), per screened update


@dataclass(frozen=True)
class Policy:
    name: str
    description: str = ""
    detector: str = "none"
    detection_threshold: float = 0.05  # per-round false-alarm probability (Bonferroni over the updates)
    quarantine_duration: float = 0.0
    enabled: bool = True


POLICY_FIELDS = tuple(f.name for f in fields(Policy) if f.name != "name")


@cache
def load_policies(path: Path = BUILTIN) -> dict[str, Policy]:
    """Policies from a YAML mapping name -> settings; unknown keys and detectors are errors.
    Read once per file (validation asks for every policy_change event); do not mutate the result."""
    data = yaml.safe_load(path.read_text()) or {}
    policies = {}
    for name, settings in data.items():
        unknown = sorted(set(settings) - set(POLICY_FIELDS))
        if unknown:
            raise FlopynetError(f"{path}: {name}.{unknown[0]}: unknown policy setting (known: {', '.join(POLICY_FIELDS)})")
        if settings.get("detector", "none") not in DETECTORS:
            raise FlopynetError(f"{path}: {name}.detector: unknown detector {settings['detector']!r} "
                                f"(known: {', '.join(DETECTORS)})")
        policies[name] = Policy(name=name, **settings)
    return policies


def robust_scores(updates: list[torch.Tensor], global_params: torch.Tensor) -> list[float]:
    """Robust z-score of each update's distance to the coordinate-wise median update."""
    deltas = torch.stack([u - global_params for u in updates]).double()
    distances = (deltas - deltas.median(dim=0).values).norm(dim=1)
    med = distances.median()
    mad = (distances - med).abs().median() * 1.4826
    if mad <= 1e-12 * max(float(med), 1.0):
        return [0.0] * len(updates)
    return ((distances - med) / mad).tolist()


def tail_probability(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def flag_updates(policy: Policy, updates: list[torch.Tensor], global_params: torch.Tensor) -> list[bool] | None:
    """Which updates the policy's detector flags as anomalous; None where it screens nothing (no detector,
    disabled, or fewer than 3 updates). A pure function, so the FL server process runs it too."""
    if not policy.enabled or policy.detector == "none" or len(updates) < 3:
        return None
    # Bonferroni over the round's updates: detection_threshold bounds the chance that a round
    # of honest clients flags anyone at all
    alpha = policy.detection_threshold / len(updates)
    return [tail_probability(z) < alpha for z in robust_scores(updates, global_params)]


class PolicyEngine:
    def __init__(self, policies: dict[str, Policy] | None = None):
        self.policies = dict(policies if policies is not None else load_policies())
        self.active: Policy = self.policies.get("permissive", Policy("permissive"))
        self.quarantined_until: dict[str, float] = {}
        self.trust: dict[str, float] = {}
        self.trust_history: list[tuple[float, dict[str, float]]] = []
        self.violations = 0  # flagged updates
        self.security_events = 0  # quarantines started, attacks seen
        self.counts = {"true_positive": 0, "false_negative": 0, "false_positive": 0, "true_negative": 0}
        self._sampled = (0, 0)

    # -- policies ---------------------------------------------------------------------------
    def set_policy(self, name: str, **overrides: Any) -> Policy:
        """Switch policies (a policy_change event); returns the previous one for the end event."""
        if name not in self.policies:
            raise FlopynetError(f"unknown policy {name!r} (known: {', '.join(self.policies)})")
        previous, self.active = self.active, replace(self.policies[name], **overrides)
        return previous

    def restore(self, policy: Policy) -> None:
        self.active = policy

    def allowed(self, client: str, now: float) -> bool:
        return self.quarantined_until.get(client, -math.inf) <= now

    # -- screening ----------------------------------------------------------------------------
    def screen(self, updates: list, global_params: torch.Tensor, now: float, attackers: set[str]) -> list:
        """The updates to aggregate; flags, quarantines and trust follow the active policy."""
        flags = flag_updates(self.active, [u.params for u in updates], global_params)
        rejected = self.record([u.client for u in updates], flags, now, attackers)
        return [u for u in updates if u.client not in rejected]

    def record(self, clients: list[str], flags: list[bool] | None, now: float, attackers: set[str]) -> set[str]:
        """Books a round's screening of these clients' updates (`flags` from flag_updates, wherever it ran:
        here or in the FL server process; None: nothing screened): trust, counts, quarantines. The
        flagged clients."""
        policy = self.active
        for client in clients:
            self.trust.setdefault(client, 1.0)
        if flags is None:
            return set()
        for client, flagged in zip(clients, flags):
            attacker = client in attackers
            key = ("true_positive" if flagged else "false_negative") if attacker else \
                  ("false_positive" if flagged else "true_negative")
            self.counts[key] += 1
            self.trust[client] = TRUST_DECAY * self.trust[client] + (1 - TRUST_DECAY) * (0.0 if flagged else 1.0)
            if flagged:
                self.violations += 1
                if policy.quarantine_duration > 0:
                    self.quarantined_until[client] = now + policy.quarantine_duration
                    self.security_events += 1
        self.trust_history.append((now, dict(sorted(self.trust.items(), key=lambda kv: client_number(kv[0])))))
        return {client for client, flagged in zip(clients, flags) if flagged}

    def take_counts(self) -> tuple[int, int]:
        """Policy violations and security events since the previous sample."""
        now = (self.violations, self.security_events)
        delta = (now[0] - self._sampled[0], now[1] - self._sampled[1])
        self._sampled = now
        return delta

    def metrics(self) -> dict[str, Any]:
        c = self.counts
        attacks, benign = c["true_positive"] + c["false_negative"], c["false_positive"] + c["true_negative"]
        return {
            "active_policy": self.active.name,
            "attack_detection_rate": c["true_positive"] / attacks if attacks else None,
            "false_positive_rate": c["false_positive"] / benign if benign else None,
            "security_violations": self.violations,
            "security_events": self.security_events,
            "screened_updates": dict(c),
            "client_trust_scores": dict(sorted(self.trust.items(), key=lambda kv: client_number(kv[0]))),
            "trust_history": [{"time": t, "trust": trust} for t, trust in self.trust_history],
        }
