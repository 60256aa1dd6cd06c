"""The nodes executor on netns: the FL server and clients as processes in their namespaces, real
weights over real TCP through Open vSwitch under Ryu; faults happen to those processes."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_flopynet import ScenarioEvent, load_scenario
from pytest_flopynet.session import Scenario
from tests.backends.test_netns_backend import reason

pytestmark = [pytest.mark.skipif(reason is not None, reason=reason or ""),
              pytest.mark.skipif(bool(os.environ.get("PYTEST_XDIST_WORKER")),
                                 reason="these check round timing and `flopynet cleanup --check` machine-wide, so "
                                        "they need the machine to themselves: run without -n (issue 20, open)")]
DIGITS_STAR = load_scenario(Path(__file__).parents[1] / "data" / "digits_star.scenario.yaml")


def cleanup_check() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "cleanup", "--check"], capture_output=True,
                          text=True)


@pytest.mark.slow  # a minute and a half: 11 processes importing torch on 2 cores, then 20 rounds
def test_digits_star_trains_in_the_node_processes_as_it_does_in_process(tmp_path):
    nodes = Scenario(DIGITS_STAR, seed=7, backend="netns", executor="nodes", reports_dir=tmp_path).run()
    here = Scenario(DIGITS_STAR, seed=7, backend="netns", executor="sequential").run()
    assert nodes.rounds_completed == here.rounds_completed == 20
    assert abs(nodes.final_accuracy - here.final_accuracy) <= 0.03
    assert all(len(r["participants"]) == 10 for r in nodes.rounds)
    assert nodes.rounds[0]["bytes_up"] == 10 * 4 * (64 * 64 + 64 + 64 * 10 + 10)  # MLP [64] on digits, float32
    assert cleanup_check().returncode == 0
    assert (tmp_path / "nodes" / "server.log").is_file()


def small(seconds: float, **fl):
    """Four digits clients, rounds without end until `seconds` of scenario time (a round takes ~20 ms)."""
    return dataclasses.replace(DIGITS_STAR, name="nodes_faults", duration_minutes=seconds / 60,
                               fl_config=dataclasses.replace(DIGITS_STAR.fl_config, client_data_sizes=[150] * 4,
                                                             clients_per_round=4, local_epochs=1,
                                                             total_rounds=100_000, **fl),
                               network_config=dataclasses.replace(DIGITS_STAR.network_config, node_count=5))


def test_a_partition_longer_than_the_round_timeout_drops_exactly_the_cut_clients():
    """The round under way when the partition starts has sent the cut clients the model: nothing crosses,
    and it closes at its deadline on the server's clock with the others' updates. Later rounds leave the
    cut clients out (the controller's routes say they are unreachable); once healed they take part again."""
    cut = ["client_2", "client_3"]
    partition = ScenarioEvent(event_type="network_partition", target="client_group", trigger_time=0.5, duration=6.0,
                              parameters={"partitioned_clients": cut})
    config = dataclasses.replace(small(12.0, round_timeout_seconds=2.5), events=[partition])
    result = Scenario(config, seed=1, backend="netns", executor="nodes").run()
    (cut_round,) = [r for r in result.rounds if r["start_time"] < 0.5 < r["end_time"]]
    assert cut_round["participants"] == ["client_1", "client_4"] and cut_round["stragglers"] == cut
    assert 2.5 <= cut_round["end_time"] - cut_round["start_time"] < 3.5  # the round timeout, not a hang
    inside = [r for r in result.rounds if r["start_time"] >= cut_round["end_time"] and r["end_time"] <= 6.5]
    assert inside and all(r["participants"] == ["client_1", "client_4"] for r in inside)
    later = [r for r in result.rounds if r["start_time"] >= 6.5 + 1.0]
    assert later and all(r["participants"] == ["client_1", "client_2", "client_3", "client_4"] for r in later[-5:])
    assert cleanup_check().returncode == 0


def test_killed_processes_are_gone_a_client_rejoins_and_the_server_resumes_its_round():
    crash = ScenarioEvent(event_type="client_failure", target="client_2", trigger_time=1.0,
                          parameters={"failure_type": "hard_failure", "recovery_time": 2.0})
    server = ScenarioEvent(event_type="client_failure", target="fl_server", trigger_time=6.0,
                           parameters={"failure_type": "hard_failure", "recovery_time": 1.0})
    runner = Scenario(dataclasses.replace(small(14.0), events=[crash, server]), seed=2, backend="netns",
                      executor="nodes")
    pids = {}

    @runner.at(0.9)
    def before(execution):
        pids["client"] = runner.orchestrator.nodes.pid("client_2")

    @runner.at(1.1)
    def during(execution):
        pids["gone"] = not os.path.exists(f"/proc/{pids['client']}")
        pids["server"] = runner.orchestrator.nodes.pid("fl_server")

    @runner.at(6.1)
    def server_down(execution):
        pids["server_gone"] = not os.path.exists(f"/proc/{pids['server']}")

    result = runner.run()
    assert result.state == "completed" and pids["gone"] and pids["server_gone"]
    away = [r for r in result.rounds if 1.0 < r["start_time"] and r["end_time"] < 3.0]
    assert away and all("client_2" not in r["participants"] for r in away)
    assert any("client_2" in r["participants"] for r in result.rounds if r["start_time"] > 3.0)
    lines = runner.orchestrator.nodes.lines
    resumed = [line for line in lines if line["event"] == "resumed"]
    assert len(resumed) == 1
    before_crash = [r for r in result.rounds if r["end_time"] <= 6.0]
    assert resumed[0]["round"] >= before_crash[-1]["round"] - 1  # from its last saved round, not from zero
    assert not [r for r in result.rounds if 6.0 < r["start_time"] < 7.0]  # no round while it was down
    assert cleanup_check().returncode == 0
