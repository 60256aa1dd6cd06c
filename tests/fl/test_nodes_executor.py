"""The nodes executor on the sim backend: the server and clients as real processes on loopback, timed
by the network model. Without events, and with a client or the server crashing between rounds, the
rounds equal the in-process executor's; the crashes happen to real processes."""
import dataclasses
import os

import pytest

from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig, ScenarioEvent
from pytest_flopynet.session import Scenario

CONFIG = ScenarioConfig(name="nodes_sim", duration_minutes=10, seed=4,
                        fl_config=FLConfig(model_architecture="logreg", total_rounds=5, clients_per_round=3,
                                           local_epochs=2, learning_rate=0.2, client_data_sizes=[120, 120, 120]),
                        network_config=NetworkConfig(node_count=4, link_bandwidth_mbps=10, base_latency_ms=5))


def run(config, executor, callbacks=()):
    runner = Scenario(config, executor=executor)
    for t, fn in callbacks:
        runner.at(t)(lambda execution, fn=fn: fn(runner))
    return runner, runner.run()


def figures(result):
    return [(r["round"], r["participants"], round(r["accuracy"], 6), round(r["loss"], 6)) for r in result.rounds]


def test_without_events_the_processes_give_the_in_process_rounds(tmp_path):
    _, nodes = run(CONFIG, "nodes")
    _, here = run(CONFIG, "sequential")
    assert figures(nodes) == figures(here)
    assert [(r["start_time"], r["end_time"]) for r in nodes.rounds] == [(r["start_time"], r["end_time"])
                                                                       for r in here.rounds]
    for r in nodes.rounds:  # what the processes measured, per client
        assert sorted(r["client_times"]) == ["client_1", "client_2", "client_3"]
        assert all(t["train_seconds"] > 0 and t["transfer_seconds"] >= 0 for t in r["client_times"].values())
    assert "client_times" not in here.rounds[0]  # the in-process record is as before


def test_a_crashed_client_process_is_gone_and_rejoins_after_recovery():
    _, plain = run(CONFIG, "sequential")
    crashed = plain.rounds[1]["start_time"] + 0.01  # mid round 2
    back = plain.rounds[3]["start_time"] + 0.01  # mid round 4: in time for round 5
    crash = ScenarioEvent(event_type="client_failure", target="client_2", trigger_time=crashed,
                          parameters={"failure_type": "hard_failure", "recovery_time": back - crashed})
    config = dataclasses.replace(CONFIG, events=[crash])
    seen = {}

    def before(runner):
        seen["pid"] = runner.orchestrator.nodes.pid("client_2")

    def during(runner):
        with pytest.raises(ProcessLookupError):
            os.kill(seen["pid"], 0)  # the process is gone, not just left out
        seen["during"] = runner.orchestrator.nodes.pid("client_2")

    def after(runner):
        seen["after"] = runner.orchestrator.nodes.pid("client_2")
    runner, nodes = run(config, "nodes", [(crashed - 1e-4, before), (crashed + 1e-4, during), (back + 1e-4, after)])
    _, here = run(config, "sequential")
    assert seen["pid"] and seen["during"] is None and seen["after"] not in (None, seen["pid"])
    assert figures(nodes) == figures(here)
    for r in nodes.rounds:
        if r["end_time"] > crashed and r["start_time"] < back:
            assert "client_2" not in r["participants"]
        elif r["start_time"] >= back:
            assert "client_2" in r["participants"]
    assert nodes.rounds[-1]["start_time"] >= back  # it did rejoin a round
    joined = [line for line in runner.orchestrator.nodes.lines if line["event"] == "joined"]
    assert [line["client"] for line in joined].count("client_2") == 2


def test_a_crashed_server_restarts_from_its_saved_round():
    _, plain = run(CONFIG, "sequential")
    between = plain.rounds[1]["end_time"] - 1e-6  # just before round 2 ends: that round is lost
    crash = ScenarioEvent(event_type="client_failure", target="fl_server", trigger_time=between,
                          parameters={"failure_type": "hard_failure", "recovery_time": 2.0})
    config = dataclasses.replace(CONFIG, events=[crash])
    runner, nodes = run(config, "nodes")
    _, here = run(config, "sequential")
    assert figures(nodes) == figures(here)  # the same model after the restart: resumed, not reset
    assert nodes.rounds[1]["participants"] == [] and not nodes.rounds[1]["aggregated"]  # lost with the server
    assert nodes.rounds[1]["accuracy"] == nodes.rounds[0]["accuracy"]
    assert nodes.rounds[2]["start_time"] >= between + 2.0  # no round while the server was down
    lines = runner.orchestrator.nodes.lines
    assert {"event": "resumed", "round": 1} in lines
    assert [line["event"] for line in lines].count("listening") == 2


def test_scaffold_carries_its_control_variates_between_the_processes():
    """SCAFFOLD on nodes: the server sends c with the model, each client keeps its own c_i (in its state
    file, across a crash) and sends c_i+ - c_i with its update; the rounds equal the in-process ones, where
    the cluster keeps every c_i, and each transfer carries twice the model's bytes."""
    scaffold = dataclasses.replace(CONFIG, fl_config=dataclasses.replace(CONFIG.fl_config, aggregation_method="scaffold"))
    _, plain = run(scaffold, "sequential")
    crashed, back = plain.rounds[1]["start_time"] + 0.01, plain.rounds[2]["start_time"] + 0.01
    crash = ScenarioEvent(event_type="client_failure", target="client_2", trigger_time=crashed,
                          parameters={"failure_type": "hard_failure", "recovery_time": back - crashed})
    for config in (scaffold, dataclasses.replace(scaffold, events=[crash])):
        runner, nodes = run(config, "nodes")
        _, here = run(config, "sequential")
        assert figures(nodes) == figures(here)
        model_bytes = runner.orchestrator.cluster.model_bytes
        for r, h in zip(nodes.rounds, here.rounds):  # on sim the network model's transfers, on both
            assert r["bytes_up"] == h["bytes_up"] == 2 * model_bytes * len(r["participants"])
            assert r["bytes_down"] == h["bytes_down"] == 2 * model_bytes * (3 if not config.events else
                                                                            len(r["participants"] + r["stragglers"]))
    _, fedavg = run(CONFIG, "sequential")  # the control variates did change the training
    assert [r["loss"] for r in plain.rounds[1:]] != [r["loss"] for r in fedavg.rounds[1:]]


def test_the_server_process_screens_updates_under_the_active_policy():
    """policy_change on nodes: the server process runs the active policy's detector on the updates it
    received and drops the flagged ones; the orchestrator's policy engine books them (trust, quarantine,
    detection rate). A client adding heavy noise to its updates is flagged and quarantined as in-process."""
    five = dataclasses.replace(CONFIG, fl_config=dataclasses.replace(CONFIG.fl_config, clients_per_round=5,
                                                                     client_data_sizes=[120] * 5),
                               network_config=dataclasses.replace(CONFIG.network_config, node_count=6))
    events = [ScenarioEvent(event_type="policy_change", target="policy_engine", trigger_time=0.0,
                            parameters={"policy_name": "strict_anomaly_detection", "quarantine_duration": 0.15}),
              ScenarioEvent(event_type="model_poisoning", target="client_2", trigger_time=0.0,
                            parameters={"attack_type": "gaussian_noise", "noise_std": 1.0})]
    config = dataclasses.replace(five, events=events)
    _, nodes = run(config, "nodes")
    _, here = run(config, "sequential")
    assert figures(nodes) == figures(here)
    assert [r["rejected"] for r in nodes.rounds] == [r["rejected"] for r in here.rounds]
    # round 1 flags the attacker (and, with 5 updates, an honest client: the detector's own false alarm,
    # 0.2 of honest updates over the run, identical in both)
    assert "client_2" in nodes.rounds[0]["rejected"] and nodes.rounds[0]["aggregated"]
    # quarantined for 0.15 s after round 1: out of the next rounds, screened again when back
    assert "client_2" not in nodes.rounds[1]["participants"]
    assert any("client_2" in r["rejected"] for r in nodes.rounds[2:])
    for key in ("attack_detection_rate", "false_positive_rate", "screened_updates", "client_trust_scores"):
        assert nodes.execution.policy_metrics[key] == here.execution.policy_metrics[key], key
    assert nodes.execution.policy_metrics["attack_detection_rate"] == 1.0
