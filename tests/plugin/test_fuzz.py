"""Hypothesis strategies for schedules and configurations, and fuzzed scenarios: a failing schedule is
shrunk, written as a scenario file, minimal, and replayed by `flopynet run`."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, find, given, settings

from pytest_flopynet import load_scenario, validate
from pytest_flopynet.analysis.gates import evaluate, merge_gates
from pytest_flopynet.session import Scenario
from pytest_flopynet.strategies import event_schedules, fl_configs, network_configs, scenario_configs

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "scenarios" / "fuzzed_schedules"
CONFIG = load_scenario(FUZZ / "fedavg_partitions.scenario.yaml")
ALL_KINDS = ["network_latency_increase", "network_packet_loss", "network_bandwidth_limit", "network_partition",
             "link_failure", "client_leave", "client_failure", "resource_constraint", "model_poisoning"]


@settings(max_examples=150, deadline=None)
@given(schedule=event_schedules(CONFIG, event_types=ALL_KINDS, max_events=6))
def test_every_drawn_schedule_is_valid_for_its_scenario(schedule):
    config = validate(CONFIG.__class__(**{**CONFIG.__dict__, "events": schedule}))
    assert len(config.events) == len(schedule) <= 6
    assert [e.trigger_time for e in schedule] == sorted(e.trigger_time for e in schedule)
    assert all(e.trigger_time + e.duration <= CONFIG.duration_seconds for e in schedule)


NO_DATABASE = settings(database=None)  # a saved example from another run is not shrunk again: find() starts fresh


def test_schedules_shrink_towards_fewer_earlier_shorter_gentler_events():
    # the smallest schedule with two events: both of the first kind listed, at 0 s, for 1 s, and gentle
    two = find(event_schedules(CONFIG, event_types=["network_latency_increase", "network_partition"]),
               lambda s: len(s) >= 2, settings=NO_DATABASE)
    assert [(e.event_type, e.trigger_time, e.duration, e.parameters["latency_increase_ms"]) for e in two] == [
        ("network_latency_increase", 0.0, 1.0, 1)] * 2
    assert two[0].target == "client_1"  # the narrowest target: one client's links
    # a partition of at least 3 clients lasting 30 s or more shrinks to exactly that
    big = find(event_schedules(CONFIG, event_types=["network_partition"]),
               lambda s: any(len(e.parameters["partitioned_clients"]) >= 3 and e.duration >= 30 for e in s),
               settings=NO_DATABASE)
    assert len(big) == 1 and big[0].duration == 30.0 and len(big[0].parameters["partitioned_clients"]) == 3
    # bounds are honoured: trigger times inside the window the caller gives
    late = find(event_schedules(CONFIG, start=100, end=120), lambda s: len(s) >= 1, settings=NO_DATABASE)
    assert late[0].trigger_time == 100.0


def test_bad_windows_and_kinds_are_clear_errors():
    with pytest.raises(ValueError, match="need 0 <= start <= end"):
        event_schedules(CONFIG, start=50, end=10)
    with pytest.raises(ValueError, match="cannot draw 'data_drift' events"):
        find(event_schedules(CONFIG, event_types=["data_drift"]), lambda s: len(s) >= 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=scenario_configs(max_events=2))
def test_drawn_scenarios_validate_and_run(config):
    validate(config)
    result = Scenario(config, seed=0).run()
    assert result.rounds_completed == config.fl_config.total_rounds or result.duration_seconds >= 299


@settings(max_examples=30, deadline=None)
@given(fl=fl_configs(clients=5), net=network_configs(nodes=6))
def test_drawn_fl_and_network_configs_are_valid(fl, net):
    from pytest_flopynet import ScenarioConfig
    validate(ScenarioConfig(name="x", fl_config=fl, network_config=net))
    assert fl.aggregation_method != "krum" or fl.clients_per_round > 2 * fl.aggregation_parameters["f"] + 2


@pytest.mark.slow  # minutes: runs in CI or with --run-slow
def test_a_falsifying_schedule_is_shrunk_written_minimal_and_replayed(pytester):
    shutil.copytree(FUZZ, pytester.path / "fuzz", ignore=shutil.ignore_patterns("__pycache__"))
    result = pytester.runpytest_subprocess("fuzz", "-k", "test_fragile", "--runxfail", "-p", "no:cacheprovider",
                                           "--alluredir", "allure-results")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*falsifying schedule written to *falsifying.scenario.yaml*"])
    (written,) = (pytester.path / "reports").glob("*fragile*/falsifying.scenario.yaml")
    config = load_scenario(written)
    assert config.events and config.gates == ["fl_rounds_completed >= 10"]
    (allure_result,) = (pytester.path / "allure-results").glob("*-result.json")
    assert "falsifying.scenario.yaml" in allure_result.read_text()  # attached to the Allure result

    def passes(events) -> bool:
        run = Scenario(config.__class__(**{**config.__dict__, "events": events})).run()
        return all(o.passed for o in evaluate(merge_gates(config.gates), run.analysis))

    assert not passes(config.events)
    for i in range(len(config.events)):  # minimal: without any one of its events, it passes
        assert passes(config.events[:i] + config.events[i + 1:])
    replay = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "run", str(written), "-q", "--reports", ""],
                            capture_output=True, text=True)
    assert replay.returncode == 1 and "[FAIL] fl_rounds_completed >= 10" in replay.stdout, replay.stderr
