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
