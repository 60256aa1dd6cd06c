"""The analyses on a hand-made record whose right answers were worked out by hand."""
import numpy as np
import pytest

from pytest_flopynet.analysis.custom import (convergence_analysis, efficiency_analysis, network_impact_analysis,
                                             robustness_metrics)
from pytest_flopynet.analysis.gates import evaluate, merge_gates

ACC = [0.5, 0.6, 0.7, 0.8, 0.6, 0.65, 0.75, 0.78, 0.81, 0.81]
LATENCY = {t: (50.0 if t in (40, 50) else 10.0) for t in range(0, 101, 10)}


def record():
    rounds = []
    for i, acc in enumerate(ACC, 1):
        missing = i in (5, 10)  # client_2 is a straggler in rounds 5 and 10
        rounds.append({"round": i, "start_time": 10.0 * (i - 1), "end_time": 10.0 * i,
                       "participants": ["client_1"] if missing else ["client_1", "client_2"],
                       "stragglers": ["client_2"] if missing else [], "bytes_up": 100, "bytes_down": 200,
                       "accuracy": acc, "loss": 1 - acc, "rejected": [], "aggregated": True})
    return {"rounds": rounds,
            "events": [{"event_type": "network_partition", "target": "client_group", "start_time": 40.0,
                        "end_time": 60.0, "description": ""}],
            "samples": {"network_latency_ms": sorted(LATENCY.items()),
                        "network_bandwidth_utilization": [(0.0, 0.2), (10.0, 0.4)]},
            "policy_metrics": {}}


def test_robustness_metrics():
    r = robustness_metrics(record())
    # pre-event level: round 4 (ends at 40) = 0.8; rounds 5 and 6 overlap the window: lowest 0.6
    assert r["max_accuracy_drop"] == pytest.approx(0.2)
    # first round after 40 s back within 0.01 of 0.8: round 9 (0.81, ends at 90): 50 s, 5 rounds
    assert (r["recovery_time_seconds"], r["recovery_rounds"]) == (50.0, 5)
    assert r["client_participation_rate"] == pytest.approx(18 / 20)
    assert r["model_staleness"] == pytest.approx((0 + 1) / 2)  # client_2 last took part in round 9 of 10


def test_convergence_analysis():
    c = convergence_analysis(record())
    assert (c["convergence_round"], c["convergence_time_seconds"]) == (9, 90.0)  # 0.81 -> 0.81
    assert (c["rounds_to_target"], c["time_to_target_seconds"]) == (4, 40.0)  # best reaches 0.8 in round 4
    assert c["final_accuracy"] == 0.81 and c["max_accuracy"] == 0.81
    # last five: 0.65 0.75 0.78 0.81 0.81, mean 0.76, squared deviations sum to 0.0176
    assert c["accuracy_stability"] == pytest.approx((0.0176 / 5) ** 0.5)
    assert c["convergence_quality"] == "unstable"
    assert c["loss_trend"] == pytest.approx(-c["accuracy_trend"])


def test_network_impact_analysis():
    n = network_impact_analysis(record())
    # mean latency sampled during each round (both ends included): 30 for rounds 4 and 6, 50 for round 5
    latency = [10, 10, 10, 30, 50, 30, 10, 10, 10, 10]
    assert n["latency_accuracy_correlation"] == pytest.approx(np.corrcoef(ACC, latency)[0, 1])
    (impact,) = n["event_impacts"]
    assert impact["accuracy_before"] == pytest.approx((0.5 + 0.6 + 0.7 + 0.8) / 4)
    assert impact["accuracy_during"] == pytest.approx((0.6 + 0.65) / 2)
    assert impact["accuracy_after"] == pytest.approx((0.75 + 0.78 + 0.81 + 0.81) / 4)
    assert impact["round_time_during"] == 10.0 and impact["impact_magnitude"] == pytest.approx(0.025)
    assert n["most_impactful_event"] == impact


def test_efficiency_analysis():
    e = efficiency_analysis(record())
    assert e["communication_cost"] == {"bytes_up": 1000, "bytes_down": 2000, "bytes_total": 3000,
                                       "bytes_per_round": 300}
    assert e["bandwidth_utilization"] == {"mean": pytest.approx(0.3), "max": 0.4}
    assert e["rounds_per_hour"] == pytest.approx(10 / 100 * 3600)
    assert e["time_to_accuracy_seconds"] == 40.0


def test_gates_reach_into_the_custom_analyses():
    results = {"execution_summary": {"final_accuracy": 0.81},
               "custom_analysis": {"robustness_metrics": robustness_metrics(record())}}
    outcomes = evaluate(merge_gates(["robustness_metrics.max_accuracy_drop <= 0.05", "final_accuracy >= 0.8"]),
                        results)
    assert [(o.actual, o.passed) for o in outcomes] == [(pytest.approx(0.2), False), (0.81, True)]


def test_gates_reach_a_link_groups_metric_whose_name_holds_a_dot():
    results = {"metrics_analysis": {"network_latency_ms": {"max": 35.0},
                                    "network_latency_ms.server_links": {"max": 20.0}}}
    outcomes = evaluate(merge_gates(["metrics_analysis.network_latency_ms.server_links.max <= 25",
                                     "metrics_analysis.network_latency_ms.max <= 25",
                                     "metrics_analysis.network_latency_ms.client_links.max <= 25"]), results)
    assert [(o.actual, o.passed) for o in outcomes] == [(20.0, True), (35.0, False), (None, False)]


def test_only_named_analyses_run_and_unknown_names_are_errors(tiny_config):
    from pytest_flopynet import ScenarioValidationError, run_scenario, validate
    config = tiny_config()
    config.analysis_config.custom_analysis = ["robustness_metrics"]
    result = run_scenario(config, seed=0)
    assert set(result.analysis["custom_analysis"]) == {"convergence_analysis", "efficiency_analysis",
                                                       "robustness_metrics"}
    config.analysis_config.custom_analysis = ["vibes_analysis"]
    with pytest.raises(ScenarioValidationError, match=r"analysis_config.custom_analysis\[0\]: unknown analysis"):
        validate(config)


def attacked_record():
    """The record above with client_2 poisoning from 40 to 60 s, two of its updates rejected, and a
    stricter policy switched on at 50 s."""
    rec = record()
    rec["events"] = [{"event_type": "model_poisoning", "target": "client_2", "start_time": 40.0, "end_time": 60.0,
                      "description": ""},
                     {"event_type": "policy_change", "target": "policy_engine", "start_time": 50.0, "end_time": None,
                      "description": ""}]
    for r in rec["rounds"][5:7]:
        r["rejected"] = ["client_2"]
    rec["policy_metrics"] = {"active_policy": "strict_anomaly_detection", "attack_detection_rate": 0.75,
                             "false_positive_rate": 0.2, "security_violations": 3, "security_events": 2,
                             "client_trust_scores": {"client_1": 0.9, "client_2": 0.2},
                             "trust_history": [{"time": 60.0, "trust": {"client_1": 0.9, "client_2": 0.2}}]}
    return rec


def test_security_analyses():
    from pytest_flopynet.analysis.custom import (attack_impact_assessment, defense_effectiveness, security_analysis,
                                                 trust_evolution)
    rec = attacked_record()
    s = security_analysis(rec)
    assert (s["attack_detection_rate"], s["false_positive_rate"], s["security_violations"]) == (0.75, 0.2, 3)
    assert s["rejected_updates"] == 2 and [e["event_type"] for e in s["attack_events"]] == ["model_poisoning"]
    a = attack_impact_assessment(rec)
    # before: rounds 1-4 (mean 0.65); during 40..60: rounds 5 and 6 (mean 0.625)
    (attack,) = a["attacks"]
    assert attack["accuracy_before"] == pytest.approx(0.65) and attack["accuracy_during"] == pytest.approx(0.625)
    assert a["max_accuracy_loss"] == pytest.approx(0.025)
    d = defense_effectiveness(rec)
    # the 5 rounds ending by 50 s: 0.5 .. 0.6, mean 0.64; the last 5 starting from 50 s: mean 0.76
    (change,) = d["policy_changes"]
    assert change["accuracy_before"] == pytest.approx(0.64) and change["accuracy_at_end"] == pytest.approx(0.76)
    assert change["gain"] == pytest.approx(0.12)
    t = trust_evolution(rec)
    assert t["least_trusted"] == "client_2" and t["final_trust"]["client_1"] == 0.9 and len(t["history"]) == 1


def test_attack_that_helps_accuracy_counts_as_no_loss():
    from pytest_flopynet.analysis.custom import attack_impact_assessment
    rec = attacked_record()
    for r in rec["rounds"][4:6]:
        r["accuracy"] = 0.9  # accuracy rose during the window
    assert attack_impact_assessment(rec)["max_accuracy_loss"] == 0.0


def test_metric_summary_and_recommendations():
    from pytest_flopynet.analysis.analyzer import metric_summary, recommendations
    from pytest_flopynet.analysis.custom import ANALYSES
    s = metric_summary([0.0, 10.0, 20.0], [1.0, 3.0, 5.0])
    assert s == {"final": 5.0, "min": 1.0, "max": 5.0, "mean": 3.0, "trend": pytest.approx(0.2)}
    rec = attacked_record()
    custom = {name: fn(rec) for name, fn in ANALYSES.items()}
    recs = recommendations({"fl_rounds_completed": 10, "final_accuracy": 0.81}, custom)
    # unstable accuracy (std 0.059 > 0.05), a drop of 0.2 > 0.1 in an event window, and a false-positive
    # rate of 0.2 > 0.1; participation 0.9 and final accuracy 0.81 are fine
    assert [(r["category"], r["priority"]) for r in recs] == [("FL Training", "high"), ("Robustness", "high"),
                                                              ("Security", "medium")]
    assert recs[1]["evidence"] == "Max accuracy drop during an event: 0.200"


def results_of(accuracies):
    rec = record()
    for r, acc in zip(rec["rounds"], accuracies):
        r["accuracy"], r["loss"] = acc, 1 - acc
    return {"scenario_name": "x", "seed": 0, "state": "completed", "rounds": rec["rounds"], "events": rec["events"],
            "execution_summary": {"fl_rounds_completed": 10, "final_accuracy": accuracies[-1],
                                  "total_duration_seconds": 100.0}}


def test_compare_scenarios():
    from pytest_flopynet.analysis.compare import compare_scenarios, format_table
    steady = [0.3, 0.4, 0.5, 0.6, 0.6, 0.7, 0.75, 0.78, 0.79, 0.79]  # no dip in the 40..60 s window, never 0.8
    comparison = compare_scenarios({"dipping": results_of(ACC), "steady": results_of(steady)})
    assert comparison["best_accuracy"] == {"scenario": "dipping", "final_accuracy": 0.81}
    assert comparison["most_robust"] == {"scenario": "steady", "max_accuracy_drop": 0.0}
    assert comparison["fastest_to_accuracy"] == {"scenario": "dipping", "time_to_target_s": 40.0}
    row = comparison["scenarios"]["dipping"]
    assert (row["rounds_to_target"], row["bytes_total"], row["recovery_time_s"]) == (4, 3000, 50.0)
    assert row["max_accuracy_drop"] == pytest.approx(0.2)
    lines = format_table(comparison["scenarios"])
    assert lines[0].split()[:4] == ["scenario", "rounds", "final", "acc"]
    assert lines[1].split()[:5] == ["dipping", "10", "0.8100", "4", "40"]
    assert lines[2].split()[:5] == ["steady", "10", "0.7900", "-", "-"]
