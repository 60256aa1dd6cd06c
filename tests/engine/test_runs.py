"""Whole scenarios on the simulated backend: accuracy, scenario time, determinism, states, events."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_flopynet import Scenario, ScenarioEvent, ScenarioState, load_scenario, run_scenario

DATA = Path(__file__).parents[1] / "data"
C = lambda mbps: mbps * 1e6 / 8 * 1448 / 1514  # noqa: E731  payload bytes/s of a link


def test_digits_star_reaches_090_in_20_rounds():
    """Issue 2's scenario: star, 10 clients x 150 digits samples, all 10 per round, MLP, FedAvg, 20 rounds."""
    result = run_scenario(load_scenario(DATA / "digits_star.scenario.yaml"), seed=0)
    assert result.state == ScenarioState.COMPLETED
    assert result.rounds_completed == 20
    assert result.final_accuracy >= 0.90
    assert all(len(r["participants"]) == 10 for r in result.rounds)


def test_one_round_takes_the_analytic_time(tiny_config):
    config = tiny_config(fl={"model_architecture": "mlp", "model_parameters": {"hidden_layers": [256]},
                             "client_data_sizes": [100], "clients_per_round": 1, "total_rounds": 1},
                         net={"node_count": 2, "link_bandwidth_mbps": 10, "base_latency_ms": 5})
    nbytes = 4 * (64 * 256 + 256 + 256 * 10 + 10)
    one_way, rtt = 0.010, 0.020  # two 5 ms links between client and server
    # set-up 1 RTT; slow start: the first round trip carries the initial window (10 x 1448 B) and waits for
    # its ACKs, then the rest goes at C; the last byte's one way
    transfer = rtt + rtt + (nbytes - 14_480) / C(10) + one_way
    compute = 100 * 1 * 3 * 2 * (64 * 256 + 256 * 10) / 2e10  # samples x epochs x 3 x forward FLOPs / device
    result = run_scenario(config, seed=1)
    (rnd,) = result.rounds
    assert rnd["bytes_down"] == rnd["bytes_up"] == nbytes
    assert rnd["end_time"] - rnd["start_time"] == pytest.approx(2 * transfer + compute, rel=0.01)


def slow_network(tiny_config, **kw):
    """10 clients behind a 25 kbit/s star: a round of logistic regression takes ~19 s of scenario time."""
    return tiny_config(duration_minutes=kw.pop("duration_minutes", 30),
                       fl={"client_data_sizes": [100] * 10, "clients_per_round": 10, "total_rounds": 1000},
                       net={"node_count": 11, "link_bandwidth_mbps": 0.025, "base_latency_ms": 10}, **kw)


def test_a_30_minute_scenario_reports_scenario_time(tiny_config):
    result = run_scenario(slow_network(tiny_config), seed=2)
    summary = result.analysis["execution_summary"]
    assert summary["total_duration_seconds"] == pytest.approx(1800.0)
    assert summary["total_duration_minutes"] == pytest.approx(30.0)
    nbytes = 4 * (64 * 10 + 10)
    # each direction: 10 flows share the server's link: 10 * bytes / C, plus set-up and propagation
    round_time = 2 * (0.040 + 10 * nbytes / C(0.025) + 0.020)
    assert summary["fl_rounds_completed"] == int(1800 // round_time)
    times, _ = result.metrics.series("network_latency_ms")
    # sampled every 10 s of scenario time, 0..1800, and at every round's start and end, once per instant
    boundaries = {t for r in result.rounds for t in (r["start_time"], r["end_time"])}
    assert times == sorted({10.0 * k for k in range(181)} | boundaries)
    # round k + 1 starts as round k ends, and round 1 starts with the periodic sample at 0: one more per round
    assert len(times) == 181 + summary["fl_rounds_completed"]


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    scenario = DATA / "digits_star.scenario.yaml"

    def run(seed, name):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "run", str(scenario), "--seed",
                               str(seed), "--json", str(out / "results.json"), "--reports", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return (out / "results.json").read_bytes(), (out / f"digits_star-seed{seed}" / "metrics.json").read_bytes()

    first, second, other = run(7, "a"), run(7, "b"), run(8, "c")
    assert first == second
    assert first[1] != other[1]
    results = json.loads(first[0])
    assert results["seed"] == 7 and results["execution_summary"]["fl_rounds_completed"] == 20
    assert set(results) >= {"scenario_id", "scenario_name", "execution_summary", "metrics_analysis",
                            "custom_analysis", "recommendations", "export_files", "rounds", "events"}


def test_states_and_status_callbacks(tiny_config):
    runner = Scenario(tiny_config(), seed=0)
    seen = []
    runner.status_callbacks.append(lambda ex: seen.append(ex.state))
    runner.run()
    assert seen == [ScenarioState.INITIALIZING, ScenarioState.RUNNING, ScenarioState.COMPLETED]


def test_a_failed_run_keeps_its_metrics_and_error(tiny_config):
    runner = Scenario(slow_network(tiny_config, duration_minutes=5), seed=0)

    @runner.at(100)
    def explode(execution):
        raise RuntimeError("the lab caught fire")

    result = runner.run()
    assert result.state == ScenarioState.FAILED
    assert result.execution.error_message == "RuntimeError: the lab caught fire"
    assert result.execution.end_time == pytest.approx(100.0)
    assert 1 <= result.rounds_completed <= 100 / 19
    assert result.analysis["execution_summary"]["total_duration_seconds"] == pytest.approx(100.0)


def test_cancel_stops_after_the_current_round(tiny_config):
    runner = Scenario(tiny_config(fl={"total_rounds": 10}), seed=0)
    runner.on_round_end = lambda round, metrics, execution: round == 2 and runner.orchestrator.cancel()
    result = runner.run()
    assert result.state == ScenarioState.CANCELLED and result.rounds_completed == 2


def test_pause_and_resume_between_rounds(tiny_config):
    import threading
    runner = Scenario(tiny_config(fl={"total_rounds": 4}), seed=0)
    seen = []
    runner.status_callbacks.append(lambda ex: seen.append((ex.state.value, ex.current_round)))

    def pause_after_two(round, metrics, execution):
        if round == 2:
            runner.orchestrator.pause()
            threading.Timer(0.05, runner.orchestrator.resume).start()

    runner.on_round_end = pause_after_two
    result = runner.run()
    assert seen == [("initializing", 0), ("running", 0), ("paused", 2), ("running", 2), ("completed", 4)]
    assert result.rounds_completed == 4


def test_events_start_and_end_at_their_times_and_restore_the_network(tiny_config):
    config = slow_network(tiny_config, duration_minutes=5, events=[ScenarioEvent(
        "network_latency_increase", 95, "all_links", {"latency_increase_ms": 40}, duration=100)])
    result = run_scenario(config, seed=0)
    assert result.events == [{"event_type": "network_latency_increase", "target": "all_links",
                              "start_time": 95.0, "end_time": 195.0, "description": ""}]
    latency = dict(zip(*result.metrics.series("network_latency_ms")))
    assert latency[90.0] == 10.0 and latency[100.0] == latency[190.0] == 50.0 and latency[200.0] == 10.0
    # a round running across t = 95 s is slowed from that moment, not from its next round
    crossing = next(r for r in result.rounds if r["start_time"] < 95 < r["end_time"])
    before = result.rounds[0]["end_time"] - result.rounds[0]["start_time"]
    assert crossing["end_time"] - crossing["start_time"] > before


def test_a_sample_at_an_events_start_or_end_sees_the_state_after_it(tiny_config):
    config = slow_network(tiny_config, duration_minutes=5, events=[ScenarioEvent(
        "network_latency_increase", 100, "all_links", {"latency_increase_ms": 40}, duration=100)])
    latency = dict(zip(*run_scenario(config, seed=0).metrics.series("network_latency_ms")))
    assert (latency[90.0], latency[100.0], latency[190.0], latency[200.0]) == (10.0, 50.0, 50.0, 10.0)


def test_samples_at_round_boundaries_and_event_edges_per_link_group(tiny_config):
    """A run of a fraction of a second, far below the 10 s monitor period: still sampled where things change."""
    config = tiny_config(fl={"total_rounds": 5}, events=[
        ScenarioEvent("network_latency_increase", 0.15, "server_links", {"latency_increase_ms": 40}, duration=0.1),
        ScenarioEvent("network_latency_increase", 0.15, "client_links", {"latency_increase_ms": 20}, duration=0.05)])
    result = run_scenario(config, seed=0)
    assert result.rounds_completed == 5 and result.rounds[-1]["end_time"] > 0.25  # both events end within the run
    boundaries = {t for r in result.rounds for t in (r["start_time"], r["end_time"])}
    times, latency = result.metrics.series("network_latency_ms")
    assert times == sorted(boundaries | {0.15, 0.2, 0.25})  # one sample per instant, two events at 0.15 included
    # a star of 4 hosts: 1 server link and 3 client links of 5 ms each
    server = dict(zip(*result.metrics.series("network_latency_ms.server_links")))
    client = dict(zip(*result.metrics.series("network_latency_ms.client_links")))
    mean = dict(zip(times, latency))
    assert (server[0.15], client[0.15], mean[0.15]) == (45.0, 25.0, (45 + 3 * 25) / 4)  # after both events started
    assert (server[0.2], client[0.2], mean[0.2]) == (45.0, 5.0, (45 + 3 * 5) / 4)
    assert (server[0.25], client[0.25], mean[0.25]) == (5.0, 5.0, 5.0)
    assert set(result.metrics.samples) >= {f"{m}.{g}" for g in ("client_links", "server_links") for m in (
        "network_latency_ms", "network_bandwidth_utilization", "network_packet_loss")}
    assert run_scenario(config, seed=0).metrics.samples == result.metrics.samples


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_partitioned_client_misses_exactly_the_rounds_it_is_cut_off(tiny_config, timeout):
    config = slow_network(tiny_config, duration_minutes=5, events=[ScenarioEvent(
        "network_partition", 60, "client_group", {"partitioned_clients": ["client_3"], "partition_duration": 90})])
    config.fl_config.round_timeout_seconds = timeout
    result = run_scenario(config, seed=0)
    for r in result.rounds:
        if r["start_time"] >= 150:
            assert "client_3" in r["participants"]
        elif r["start_time"] >= 60:
            assert "client_3" not in r["participants"] + r["stragglers"]  # not even selected
    crossing = next(r for r in result.rounds if r["start_time"] < 60 < r["end_time"])
    if timeout is None:  # the server waits: client_3's stalled transfer resumes when the partition ends
        assert "client_3" in crossing["participants"] and crossing["end_time"] > 150
    else:  # the round closes at its deadline without client_3
        assert crossing["stragglers"] == ["client_3"]
        assert crossing["end_time"] == pytest.approx(crossing["start_time"] + 30)


def test_timed_callbacks_and_their_undo(tiny_config):
    runner = Scenario(slow_network(tiny_config, duration_minutes=2), seed=0)
    calls = []

    @runner.at(30, duration=20)
    def mark(execution):
        calls.append(("start", runner.orchestrator.clock.now()))
        return lambda: calls.append(("end", runner.orchestrator.clock.now()))

    runner.run()
    assert calls == [("start", 30.0), ("end", 50.0)]


@pytest.mark.parametrize("method", ["fedavg", "fedprox"])
def test_fedprox_keeps_a_stragglers_partial_work_where_fedavg_drops_it(tiny_config, method):
    from pytest_flopynet import ScenarioEvent
    slow = ScenarioEvent("resource_constraint", 0, "client_1", {"cpu_slowdown_factor": 10})
    config = tiny_config(fl={"aggregation_method": method, "client_compute_gflops": 0.001,
                             "round_timeout_seconds": 2.0}, events=[slow])
    result = run_scenario(config, seed=0)
    # others train 100 x 3840 FLOPs at 1 MFLOP/s = 0.384 s; client_1 ten times that, past the 2 s deadline
    for r in result.rounds:
        if method == "fedavg":
            assert r["stragglers"] == ["client_1"] and r["end_time"] - r["start_time"] == pytest.approx(2.0)
        else:  # it trains what fits before the deadline, leaving time for its upload, and is aggregated
            assert "client_1" in r["participants"] and r["end_time"] - r["start_time"] < 2.0


def test_the_command_line_trains_with_the_executor_it_names(tiny_config, tmp_path, monkeypatch, capsys):
    import pytest_flopynet.fl.cluster as cluster
    from pytest_flopynet import cli, save_scenario
    kinds, made = [], cluster.make_executor
    monkeypatch.setattr(cluster, "make_executor", lambda kind, model, **s: kinds.append(kind) or made(kind, model, **s))
    path = save_scenario(tiny_config(), tmp_path / "tiny.scenario.yaml")
    assert cli.main(["run", str(path), "--executor", "sequential", "--reports", "", "-q"]) == 0
    assert kinds == ["sequential"]
    assert "tiny: completed on sim, seed 0: 3 rounds" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["run", str(path), "--executor", "fast"])
    assert "argument --executor: invalid choice: 'fast'" in capsys.readouterr().err
