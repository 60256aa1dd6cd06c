"""The analyses a scenario's analysis_config.custom_analysis names, each a pure function of the
collected record (rounds and events with scenario timestamps, samples, policy metrics).
convergence_analysis and efficiency_analysis always run."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

TARGET_ACCURACY = 0.8  # rounds and time to this accuracy, on the running best
CONVERGENCE_DELTA = 0.01  # converged once accuracy moves less than this from round to round
RECOVERY_TOLERANCE = 0.01  # recovered once accuracy is back within this of its pre-event level
WINDOW_ROUNDS = 5  # rounds averaged before and after an event


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def convergence_analysis(record: dict[str, Any]) -> dict[str, Any]:
    rounds = record["rounds"]
    if not rounds:
        return {"error": "no rounds completed"}
    acc = [r["accuracy"] for r in rounds]
    loss = [r["loss"] for r in rounds]
    conv = next((i for i in range(len(acc))
                 if all(abs(b - a) < CONVERGENCE_DELTA for a, b in zip(acc[i:], acc[i + 1:]))), None)
    best, target = -math.inf, None
    for r in rounds:  # FL papers count time to accuracy on the running best
        best = max(best, r["accuracy"])
        if best >= TARGET_ACCURACY:
            target = r
            break
    stability = float(np.std(acc[-5:]))
    trend = lambda ys: float(np.polyfit(range(len(ys)), ys, 1)[0]) if len(ys) > 1 else 0.0  # noqa: E731
    return {
        "convergence_round": rounds[conv]["round"] if conv is not None and len(acc) > 1 else None,
        "convergence_time_seconds": rounds[conv]["end_time"] if conv is not None and len(acc) > 1 else None,
        "final_accuracy": acc[-1], "max_accuracy": max(acc), "accuracy_stability": stability,
        "accuracy_trend": trend(acc), "loss_trend": trend(loss),
        "convergence_quality": "good" if stability < 0.05 else "unstable",
        "target_accuracy": TARGET_ACCURACY,
        "rounds_to_target": target["round"] if target else None,
        "time_to_target_seconds": target["end_time"] if target else None,
    }


def _windows(record):
    """Each event with the rounds before it, during it and after it."""
    rounds, out = record["rounds"], []
    for e in record["events"]:
        start, end = e["start_time"], e["end_time"] if e["end_time"] is not None else math.inf
        out.append((e, [r for r in rounds if r["end_time"] <= start],
                    [r for r in rounds if r["end_time"] > start and r["start_time"] < end],
                    [r for r in rounds if r["start_time"] >= end]))
    return out


def network_impact_analysis(record: dict[str, Any]) -> dict[str, Any]:
    rounds, latency = record["rounds"], record["samples"].get("network_latency_ms", [])
    pairs = []
    for r in rounds:  # each round's accuracy against the mean latency sampled while it ran
        during = [v for t, v in latency if r["start_time"] <= t <= r["end_time"]]
        before = [v for t, v in latency if t <= r["end_time"]]
        if during or before:
            pairs.append((r["accuracy"], float(np.mean(during)) if during else before[-1]))
    corr = None
    if len(pairs) > 1 and np.std([a for a, _ in pairs]) > 0 and np.std([lat for _, lat in pairs]) > 0:
        corr = float(np.corrcoef([a for a, _ in pairs], [lat for _, lat in pairs])[0, 1])
    dur = lambda rs: _mean(r["end_time"] - r["start_time"] for r in rs)  # noqa: E731
    acc = lambda rs: _mean(r["accuracy"] for r in rs)  # noqa: E731
    impacts = []
    for e, before, during, after in _windows(record):
        before, after = before[-WINDOW_ROUNDS:], after[:WINDOW_ROUNDS]
        b, d = acc(before), acc(during)
        impacts.append({"event_type": e["event_type"], "target": e["target"], "start_time": e["start_time"],
                        "end_time": e["end_time"], "accuracy_before": b, "accuracy_during": d,
                        "accuracy_after": acc(after), "round_time_before": dur(before), "round_time_during": dur(during),
                        "round_time_after": dur(after),
                        "impact_magnitude": abs(d - b) if b is not None and d is not None else None})
    ranked = [i for i in impacts if i["impact_magnitude"] is not None]
    return {"latency_accuracy_correlation": corr,
            "network_sensitivity": "high" if corr is not None and abs(corr) > 0.5 else "low",
            "event_impacts": impacts,
            "most_impactful_event": max(ranked, key=lambda i: i["impact_magnitude"]) if ranked else None}


def robustness_metrics(record: dict[str, Any]) -> dict[str, Any]:
    rounds, per_event = record["rounds"], []
    for e, before, during, _ in _windows(record):
        if not before or not during:
            continue
        level = before[-1]["accuracy"]
        drop = max(0.0, level - min(r["accuracy"] for r in during))
        back = next((r for r in rounds if r["end_time"] > e["start_time"]
                     and r["accuracy"] >= level - RECOVERY_TOLERANCE), None)
        per_event.append({"event_type": e["event_type"], "start_time": e["start_time"], "pre_event_accuracy": level,
                          "accuracy_drop": drop,
                          "recovery_time_seconds": back["end_time"] - e["start_time"] if back else None,
                          "recovery_rounds": back["round"] - before[-1]["round"] if back else None})
    selected = sum(len(r["participants"]) + len(r["stragglers"]) for r in rounds)
    last_seen = {}
    for r in rounds:
        for c in r["participants"]:
            last_seen[c] = r["round"]
    final = rounds[-1]["round"] if rounds else 0
    recoveries = [p["recovery_time_seconds"] for p in per_event]
    return {
        "max_accuracy_drop": max((p["accuracy_drop"] for p in per_event), default=0.0),
        "recovery_time_seconds": None if None in recoveries else max(recoveries, default=0.0),
        "recovery_rounds": None if None in recoveries else max((p["recovery_rounds"] for p in per_event), default=0),
        "client_participation_rate": sum(len(r["participants"]) for r in rounds) / selected if selected else None,
        "model_staleness": _mean(final - seen for seen in last_seen.values()),
        "per_event": per_event,
    }


def efficiency_analysis(record: dict[str, Any]) -> dict[str, Any]:
    rounds = record["rounds"]
    up, down = sum(r["bytes_up"] for r in rounds), sum(r["bytes_down"] for r in rounds)
    util = [v for _, v in record["samples"].get("network_bandwidth_utilization", [])]
    conv = convergence_analysis(record) if rounds else {}
    duration = rounds[-1]["end_time"] - rounds[0]["start_time"] if rounds else 0.0
    return {
        "communication_cost": {"bytes_up": up, "bytes_down": down, "bytes_total": up + down,
                               "bytes_per_round": (up + down) / len(rounds) if rounds else None},
        "bandwidth_utilization": {"mean": _mean(util), "max": max(util, default=None)},
        "time_to_accuracy_seconds": conv.get("time_to_target_seconds"),
        "rounds_per_hour": len(rounds) / duration * 3600 if duration > 0 else None,
    }


def security_analysis(record: dict[str, Any]) -> dict[str, Any]:
    pm = record.get("policy_metrics") or {}
    keys = ("active_policy", "attack_detection_rate", "false_positive_rate", "security_violations", "security_events")
    return {**{k: pm.get(k) for k in keys},
            "rejected_updates": sum(len(r.get("rejected", [])) for r in record["rounds"]),
            "attack_events": [e for e in record["events"] if e["event_type"] in ("model_poisoning", "security_event")]}


def attack_impact_assessment(record: dict[str, Any]) -> dict[str, Any]:
    impacts = network_impact_analysis(record)["event_impacts"]
    attacks = [i for i in impacts if i["event_type"] in ("model_poisoning", "data_drift", "security_event")]
    return {"attacks": attacks,
            "max_accuracy_loss": max((max(0.0, i["accuracy_before"] - i["accuracy_during"]) for i in attacks
                                      if i["accuracy_before"] is not None and i["accuracy_during"] is not None),
                                     default=0.0)}


def defense_effectiveness(record: dict[str, Any]) -> dict[str, Any]:
    switches = [e for e in record["events"] if e["event_type"] == "policy_change"]
    rounds = record["rounds"]
    out = []
    for e in switches:
        before = [r["accuracy"] for r in rounds if r["end_time"] <= e["start_time"]][-WINDOW_ROUNDS:]
        after = [r["accuracy"] for r in rounds if r["start_time"] >= e["start_time"]][-WINDOW_ROUNDS:]
        out.append({"start_time": e["start_time"], "accuracy_before": _mean(before),
                    "accuracy_at_end": _mean(after),
                    "gain": _mean(after) - _mean(before) if before and after else None})
    pm = record.get("policy_metrics") or {}
    return {"policy_changes": out, "attack_detection_rate": pm.get("attack_detection_rate"),
            "false_positive_rate": pm.get("false_positive_rate")}


def trust_evolution(record: dict[str, Any]) -> dict[str, Any]:
    pm = record.get("policy_metrics") or {}
    final = pm.get("client_trust_scores") or {}
    return {"final_trust": final, "history": pm.get("trust_history", []),
            "least_trusted": min(final, key=final.get) if final else None}


ANALYSES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "convergence_analysis": convergence_analysis,
    "network_impact_analysis": network_impact_analysis,
    "robustness_metrics": robustness_metrics,
    "efficiency_analysis": efficiency_analysis,
    "security_analysis": security_analysis,
    "attack_impact_assessment": attack_impact_assessment,
    "defense_effectiveness": defense_effectiveness,
    "trust_evolution": trust_evolution,
}
BASIC = ("convergence_analysis", "efficiency_analysis")


def analysis_problem(name: str) -> str | None:
    """Why `name` is no analysis (for scenario validation and analyze_scenario alike), or None."""
    return None if name in ANALYSES else f"unknown analysis {name!r} (known: {', '.join(ANALYSES)})"
