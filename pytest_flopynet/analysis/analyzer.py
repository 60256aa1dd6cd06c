"""The results structure of DESIGN.md, computed from the collector's scenario timestamps."""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..errors import FlopynetError
from ..model import ScenarioState
from .custom import ANALYSES, BASIC, analysis_problem


def _trend(times: list[float], values: list[float]) -> float:
    """Least-squares slope per scenario second (0 with fewer than two distinct times)."""
    if len(values) < 2 or len(set(times)) < 2:
        return 0.0
    return float(np.polyfit(times, values, 1)[0])


def metric_summary(times: list[float], values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"final": values[-1], "min": min(values), "max": max(values), "mean": float(np.mean(values)),
            "trend": _trend(times, values)}


def execution_summary(execution) -> dict[str, Any]:
    m = execution.metrics
    duration = (execution.end_time or 0.0) - (execution.start_time or 0.0)
    latency = [v for _, v in m.samples.get("network_latency_ms", [])]
    last = m.rounds[-1] if m.rounds else None
    return {
        "total_duration_seconds": duration,
        "total_duration_minutes": duration / 60,
        "fl_rounds_completed": len(m.rounds),
        "events_triggered": len(m.events),
        "final_accuracy": last.accuracy if last else 0.0,
        "final_loss": last.loss if last else math.inf,
        "avg_network_latency": float(np.mean(latency)) if latency else 0.0,
        "max_network_latency": max(latency, default=0.0),
        "total_policy_violations": sum(v for _, v in m.samples.get("policy_violations", [])),
    }


ROUND_METRICS = ("accuracy", "loss", "bytes_up", "bytes_down")


def metrics_analysis(execution) -> dict[str, dict[str, float]]:
    m = execution.metrics
    out = {}
    for name in ROUND_METRICS:
        out[name] = metric_summary(*m.series(name))
    durations = [r.end_time - r.start_time for r in m.rounds]
    out["round_duration_seconds"] = metric_summary([r.end_time for r in m.rounds], durations)
    for name, pairs in m.samples.items():
        out[name] = metric_summary([t for t, _ in pairs], [v for _, v in pairs])
    return {k: v for k, v in out.items() if v}


def recommendations(summary: dict[str, Any], custom: dict[str, Any]) -> list[dict[str, str]]:
    """The seed's rules, and more where the analyses support them."""
    recs = []

    def rec(category, priority, text, evidence):
        recs.append({"category": category, "priority": priority, "recommendation": text, "evidence": evidence})

    conv = custom.get("convergence_analysis", {})
    if conv.get("convergence_quality") == "unstable":
        rec("FL Training", "high", "Consider reducing learning rate or increasing local epochs for better stability",
            f"Accuracy stability: {conv['accuracy_stability']:.4f}")
    net = custom.get("network_impact_analysis", {})
    if net.get("network_sensitivity") == "high":
        rec("Network", "medium", "Implement adaptive strategies for high-latency conditions",
            f"Latency-accuracy correlation: {net['latency_accuracy_correlation']:.3f}")
    if summary["fl_rounds_completed"] and summary["final_accuracy"] < 0.7:
        rec("Model Performance", "high", "Consider increasing model complexity or training duration",
            f"Final accuracy: {summary['final_accuracy']:.3f}")
    rob = custom.get("robustness_metrics", {})
    if rob.get("max_accuracy_drop", 0) > 0.1:
        rec("Robustness", "high", "Use a Byzantine-robust aggregation rule or traffic prioritisation for FL flows",
            f"Max accuracy drop during an event: {rob['max_accuracy_drop']:.3f}")
    if rob.get("client_participation_rate") is not None and rob["client_participation_rate"] < 0.8:
        rec("Participation", "medium", "Set a round timeout or use FedProx so stragglers still contribute",
            f"Client participation rate: {rob['client_participation_rate']:.2f}")
    sec = custom.get("security_analysis", {})
    if sec.get("false_positive_rate") is not None and sec["false_positive_rate"] > 0.1:
        rec("Security", "medium", "Raise the anomaly detector's threshold or shorten quarantines",
            f"False positive rate: {sec['false_positive_rate']:.3f}")
    return recs


def analyze_scenario(run, custom_analysis: Iterable[str] = ()) -> dict[str, Any]:
    """The seed's results structure plus the raw record (rounds and events in scenario seconds) of a
    finished run (a ScenarioResult or its execution: the record, plain data, never a live part).
    `custom_analysis` adds analyses to those the scenario's analysis_config names, without running it
    again."""
    execution = getattr(run, "execution", run)
    for name in custom_analysis:
        if analysis_problem(name):
            raise FlopynetError(f"custom_analysis: {analysis_problem(name)}")
    summary = execution_summary(execution)
    raw = execution.metrics.to_dict()
    policy = dict(execution.policy_metrics)
    record = {**raw, "policy_metrics": policy}
    names = dict.fromkeys([*BASIC, *execution.config.analysis_config.custom_analysis, *custom_analysis])
    custom = {name: ANALYSES[name](record) for name in names}
    return {
        "scenario_id": execution.scenario_id,
        "scenario_name": execution.config.name,
        "state": str(execution.state),
        "seed": execution.seed,
        "backend": execution.backend,
        "error_message": execution.error_message,
        "execution_summary": summary,
        "metrics_analysis": metrics_analysis(execution),
        "custom_analysis": custom,
        "recommendations": recommendations(summary, custom) if execution.state == ScenarioState.COMPLETED else [],
        "export_files": [],
        "policy_metrics": policy,
        "rounds": raw["rounds"],
        "events": raw["events"],
        "events_never_fired": events_never_fired(execution),
    }


def events_never_fired(execution) -> list[dict[str, Any]]:
    """The scheduled events that did not start because the run ended first (all rounds done before
    their trigger time): per event type and target, the earliest ones are those that fired."""
    started: dict[tuple[str, str], int] = {}
    for record in execution.metrics.events:
        started[(record.event_type, record.target)] = started.get((record.event_type, record.target), 0) + 1
    never = []
    for event in sorted(execution.config.events, key=lambda e: e.trigger_time):
        key = (str(event.event_type), event.target)
        if started.get(key, 0) > 0:
            started[key] -= 1
        else:
            never.append({"event_type": key[0], "target": event.target, "trigger_time": event.trigger_time})
    return never
