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
