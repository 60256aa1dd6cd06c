"""The pytest plugin as users meet it: pytest processes in a scratch project (pytester)."""
import re
import textwrap

import pytest

TINY = """\
name: {name}
duration_minutes: 10
tags: {tags}
fl_config:
  model_architecture: logreg
  total_rounds: 3
  clients_per_round: 3
  learning_rate: 0.2
  local_epochs: 3
  client_data_sizes: [100, 100, 100]
network_config: {{topology_type: star, node_count: 4, link_bandwidth_mbps: 10, base_latency_ms: 5}}
gates: {gates}
"""


def scenario_file(pytester, path, name="tiny", tags="[]", gates="[]"):
    p = pytester.path / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(TINY.format(name=name, tags=tags, gates=gates))
    return p


# Each run is a real pytest process (runpytest_subprocess): torch cannot be imported twice in one.
INI = "[pytest]\naddopts = --strict-markers -p no:cacheprovider\n"


@pytest.fixture
def project(pytester):
    pytester.makeini(INI)
    return pytester


def test_scenario_files_are_collected_and_run(project):
    scenario_file(project, "scenarios/basic/scenario.yaml", name="basic", gates="['final_accuracy >= 0.5']")
    scenario_file(project, "more/edge.scenario.yaml", name="edge")
    result = project.runpytest_subprocess("-v", "-p", "no:flopynet-live")  # -v's PASSED on the test's own line
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*more/edge.scenario.yaml::edge PASSED*",
                                 "*scenarios/basic/scenario.yaml::basic PASSED*",
                                 "*flopynet scenarios*", "test * rounds * final acc * gates: target  actual  verdict * outcome",
                                 "basic * 3 * final_accuracy >= 0.5 * pass * passed"])
    assert (project.path / "reports" / "scenarios_basic_scenario.yaml_basic" / "analysis.json").is_file()


def test_seed_is_in_the_header(project):
    scenario_file(project, "a.scenario.yaml")
    result = project.runpytest_subprocess("--flopynet-seed", "42")
    result.stdout.fnmatch_lines(["flopynet: seed=42 backend=sim executor=auto reports=*"])


def test_a_failing_gate_names_every_gate_and_the_command_line_relaxes_it(project):
    scenario_file(project, "g.scenario.yaml", name="gated",
                  gates="['final_accuracy >= 0.999', 'fl_rounds_completed >= 3']")
    failed = project.runpytest_subprocess()
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*scenario 'gated': 1 of 2 gates failed:*",
                                 "*[[]FAIL[]] final_accuracy >= 0.999  (actual: 0.*)*",
                                 "*[[]PASS[]] fl_rounds_completed >= 3  (actual: 3)*"])
    assert "Traceback" not in failed.stdout.str()
    project.runpytest_subprocess("--flopynet-gate", "final_accuracy >= 0.5").assert_outcomes(passed=1)


def test_gates_from_ini_and_markers_and_their_order(project):
    project.makeini(INI + "flopynet_gates =\n    final_accuracy >= 0.99\n")
    scenario_file(project, "scenarios/tiny/scenario.yaml")
    project.makepyfile(test_marked=textwrap.dedent("""
        import pytest

        @pytest.mark.scenario("tiny")
        @pytest.mark.gate("final_accuracy >= 0.0", "fl_rounds_completed == 3")
        def test_marker_loses_to_ini(scenario):
            scenario.run()
    """))
    result = project.runpytest_subprocess("test_marked.py")
    result.assert_outcomes(failed=1)  # the ini's 0.99 overrides the marker's 0.0
    result.stdout.fnmatch_lines(["*[[]FAIL[]] final_accuracy >= 0.99*", "*[[]PASS[]] fl_rounds_completed == 3*"])
    project.runpytest_subprocess("test_marked.py", "--flopynet-gate", "final_accuracy>=0.1").assert_outcomes(passed=1)


def test_tags_and_families_select_scenarios_and_tests(project):
    scenario_file(project, "scenarios/unstable/scenario.yaml", name="unstable", tags="[network_instability, lab]")
    scenario_file(project, "scenarios/calm/scenario.yaml", name="calm", tags="[basic_fl_training]")
    project.makepyfile(test_fam=textwrap.dedent("""
        import pytest

        @pytest.mark.scenario("unstable")
        def test_unstable(scenario):
            assert scenario.run().rounds_completed == 3

        @pytest.mark.scenario("calm")
        def test_calm(scenario):
            scenario.run()
    """))
    result = project.runpytest_subprocess("-m", "network_instability", "-v")
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines(["*unstable/scenario.yaml::unstable PASSED*", "*test_fam.py::test_unstable PASSED*"])
    project.runpytest_subprocess("-m", "lab").assert_outcomes(passed=2, deselected=2)


def test_a_bad_scenario_file_is_one_clear_collection_error(project):
    (project.path / "bad.scenario.yaml").write_text("name: bad\nfl_config: {total_rounds: ten}\n")
    scenario_file(project, "good.scenario.yaml")
    result = project.runpytest_subprocess("--continue-on-collection-errors")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*bad.scenario.yaml: fl_config.total_rounds: expected integer, got string 'ten'*"])
    assert "Traceback" not in result.stdout.str()


def test_a_problem_found_while_running_is_one_message(project):
    """The model's class count against the data set's is known only once the data are loaded: the
    test fails with that one line (pytest used to print it twice, chained)."""
    p = scenario_file(project, "c.scenario.yaml", name="classes")
    p.write_text(p.read_text().replace("model_architecture: logreg", "model_architecture: logreg\n"
                                       "  model_parameters: {num_classes: 5}"))
    result = project.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    line = "fl_config.model_parameters.num_classes: 5 but the data set has 10 classes"
    assert result.stdout.lines.count(line) == 1  # the failure's text (the summary line quotes it too)
    assert "During handling" not in result.stdout.str() and "Traceback" not in result.stdout.str()


def test_fixtures_events_hooks_and_junit_properties(project):
    scenario_file(project, "scenarios/tiny/scenario.yaml")
    project.makeconftest(textwrap.dedent("""
        SEEN = []

        def pytest_flopynet_event(event, phase, execution):
            SEEN.append((str(event.event_type), phase))

        def pytest_flopynet_round_end(round, metrics, execution):
            SEEN.append(("round", round))
    """))
    project.makepyfile(test_events=textwrap.dedent("""
        import pytest
        from pytest_flopynet import ScenarioEvent, event_fixture
        from conftest import SEEN

        slow = event_fixture(ScenarioEvent(event_type="network_latency_increase", trigger_time=0.05,
                                           target="all_links", parameters={"latency_increase_ms": 20},
                                           duration=0.1))

        @pytest.mark.scenario("tiny")
        def test_slow(scenario, slow, topology, controller, fl_cluster):
            assert len(topology.clients) == 3 and fl_cluster.model_bytes == 2600
            result = scenario.run()
            assert [e["start_time"] for e in result.events] == [0.05]
            assert [s for s in SEEN if s[0] != "round"] == [("network_latency_increase", "start"),
                                                             ("network_latency_increase", "end")]
            assert [s for s in SEEN if s[0] == "round"] == [("round", 1), ("round", 2), ("round", 3)]
    """))
    result = project.runpytest_subprocess("test_events.py", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1)
    junit = (project.path / "junit.xml").read_text()
    assert '<property name="flopynet.fl_rounds_completed" value="3"' in junit
    assert 'name="flopynet.final_accuracy"' in junit


def test_the_events_and_analyzer_fixtures(project):
    """DESIGN's `events` fixture is the scenario's live event list (file, then event fixtures, then
    what the test appends); `analyzer` is analyze_scenario, which adds analyses to a finished run."""
    scenario_file(project, "scenarios/tiny/scenario.yaml")
    project.makepyfile(test_fixtures=textwrap.dedent("""
        import pytest
        from pytest_flopynet import FlopynetError, ScenarioEvent, analyze_scenario, event_fixture

        slow = event_fixture(ScenarioEvent("network_latency_increase", 0.05, "all_links",
                                           {"latency_increase_ms": 20}, duration=0.1))

        @pytest.mark.scenario("tiny")
        def test_fixtures(scenario, slow, events, analyzer):
            assert events == [slow]
            events.append(ScenarioEvent("network_bandwidth_limit", 0.2, "server_links",
                                        {"bandwidth_limit_mbps": 5}, duration=0.1))
            result = scenario.run()
            assert [(e["event_type"], e["start_time"]) for e in result.events] == [
                ("network_latency_increase", 0.05), ("network_bandwidth_limit", 0.2)]
            assert analyzer is analyze_scenario
            assert "network_impact_analysis" not in result.analysis["custom_analysis"]
            again = analyzer(result, custom_analysis=["network_impact_analysis"])
            assert again["execution_summary"] == result.summary
            impacts = again["custom_analysis"]["network_impact_analysis"]["event_impacts"]
            assert [i["event_type"] for i in impacts] == ["network_latency_increase", "network_bandwidth_limit"]
            # 3 rounds x 3 clients, each downloading and uploading the 2600-byte model
            cost = again["custom_analysis"]["efficiency_analysis"]["communication_cost"]
            assert cost["bytes_total"] == 3 * 3 * 2 * 2600
            with pytest.raises(FlopynetError, match="custom_analysis: unknown analysis 'speed'"):
                analyzer(result.execution, custom_analysis=["speed"])
    """))
    project.runpytest_subprocess("test_fixtures.py").assert_outcomes(passed=1)


def test_parametrised_event_fixtures_give_one_test_per_value(project):
    scenario_file(project, "scenarios/tiny/scenario.yaml")
    project.makepyfile(test_param=textwrap.dedent("""
        import pytest
        from pytest_flopynet import ScenarioEvent, event_fixture

        latency = event_fixture(lambda ms: ScenarioEvent("network_latency_increase", 0, "all_links",
                                                         {"latency_increase_ms": ms}, duration=60),
                                params=[0, 50], ids=["calm", "slow"])

        @pytest.mark.scenario("tiny")
        def test_latency(scenario, latency):
            result = scenario.run()
            first = result.rounds[0]["end_time"] - result.rounds[0]["start_time"]
            # a transfer costs 1.5 RTTs (1 set-up, 0.5 propagation) plus 3 x bytes / C; a round is two
            # transfers and 100 samples x 3 epochs x 3 x 1280 FLOPs at 20 GFLOP/s
            base = 2 * (0.030 + 3 * 2600 / (10e6 / 8 * 1448 / 1514)) + 300 * 3 * 1280 / 20e9
            # +ms on both links of a path: RTT + 4 ms, so + 6 ms per transfer, + 12 ms per round
            extra = 12 * latency.parameters["latency_increase_ms"] / 1000
            assert first == pytest.approx(base + extra, rel=1e-6)
    """))
    result = project.runpytest_subprocess("test_param.py", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_latency[[]calm[]] PASSED*", "*test_latency[[]slow[]] PASSED*"])


@pytest.mark.slow  # minutes: runs in CI or with --run-slow
def test_the_executor_option_chooses_how_clients_train(project):
    """--flopynet-executor, or the ini key, reaches every cluster (collected scenario files and the
    fl_cluster fixture alike) and the header; the executors agree on the metrics; a name that is no
    executor is one usage error."""
    scenario_file(project, "scenarios/tiny/scenario.yaml")
    project.makeconftest(textwrap.dedent("""
        import pytest_flopynet.fl.cluster as cluster

        made = cluster.make_executor

        def spy(kind, model, **settings):
            executor = made(kind, model, **settings)
            print(f"EXECUTOR {kind} {type(executor).__name__} compile={getattr(executor, 'compile', None)}")
            return executor

        cluster.make_executor = spy
    """))
    project.makepyfile(test_ex=textwrap.dedent("""
        import pytest

        @pytest.mark.scenario("tiny")
        def test_accuracy(scenario):
            print(f"ACCURACY {scenario.run().summary['final_accuracy']:.6f}")
    """))
    accuracies = set()
    for args, line in [((), "EXECUTOR auto AutoExecutor compile=None"),
                       (("--flopynet-executor", "sequential"), "EXECUTOR sequential SequentialExecutor compile=None"),
                       (("-o", "flopynet_executor=compiled"), "EXECUTOR compiled BatchedExecutor compile=True")]:
        result = project.runpytest_subprocess("-s", "-p", "no:randomly", *args)
        result.assert_outcomes(passed=2)
        kind = line.split()[1]
        result.stdout.fnmatch_lines([f"flopynet: * executor={kind} *"])
        assert result.stdout.str().count(line) == 2  # the scenario file's cluster and the fixture's
        accuracies |= {ln.split()[-1] for ln in result.stdout.lines if ln.startswith("ACCURACY")}
    assert len(accuracies) == 1  # same seed, same data, same batches: the same final accuracy
    wrong = project.runpytest_subprocess("--flopynet-executor", "fast")
    assert wrong.ret == pytest.ExitCode.USAGE_ERROR
    wrong.stderr.fnmatch_lines(["ERROR: --flopynet-executor / ini flopynet_executor: 'fast' is not one of auto, "
                                "sequential, batched, compiled, nodes"])


def test_a_test_without_a_scenario_says_how_to_choose_one(project):
    project.makepyfile(test_none="def test_x(scenario):\n    scenario.run()\n")
    result = project.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no scenario chosen: mark the test with @pytest.mark.scenario(name_or_path)*"])


def test_a_scenario_can_be_built_in_python_by_overriding_scenario_config(project):
    project.makepyfile(test_py=textwrap.dedent("""
        import pytest
        from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig

        @pytest.fixture
        def scenario_config():
            return ScenarioConfig(name="py", fl_config=FLConfig(model_architecture="logreg", total_rounds=2,
                                  clients_per_round=2, client_data_sizes=[80, 80], learning_rate=0.2),
                                  network_config=NetworkConfig(node_count=3))

        def test_py(scenario):
            result = scenario.run()
            assert result.rounds_completed == 2
            assert result.state == "completed"
    """))
    project.runpytest_subprocess().assert_outcomes(passed=1)


def test_requirements_beyond_this_machine_skip_with_the_reason(project):
    p = scenario_file(project, "big.scenario.yaml", name="big")
    p.write_text(p.read_text() + "requirements: {min_cpu_cores: 4096, min_memory_gb: 1}\n")
    result = project.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*scenario 'big' needs 4096 CPU cores, this machine has *"])


def test_an_unknown_backend_is_a_usage_error_and_an_unavailable_one_skips_with_the_reason(project, monkeypatch,
                                                                                         tmp_path):
    scenario_file(project, "n.scenario.yaml")
    result = project.runpytest_subprocess("-rs", "--flopynet-backend", "ns3")  # not one green skipped run
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--flopynet-backend / ini flopynet_backend: 'ns3' is not one of sim, netns, gns3"])
    # netns without Ryu's environment (or, as another user, without root) says what is missing
    monkeypatch.setenv("FLOPYNET_RYU_VENV", str(tmp_path / "no-ryu"))
    result = project.runpytest_subprocess("-rs", "--flopynet-backend", "netns")
    result.assert_outcomes(skipped=1)
    assert "Ryu's environment is missing" in result.stdout.str() or "needs root" in result.stdout.str()


def test_strict_markers_are_clean_for_every_marker_the_plugin_uses(project):
    project.makepyfile(test_m=textwrap.dedent("""
        import pytest

        @pytest.mark.basic_fl_training
        @pytest.mark.network_instability
        @pytest.mark.adversarial_attacks
        @pytest.mark.custom_edge
        @pytest.mark.flopynet
        @pytest.mark.gate("final_accuracy >= 0")
        @pytest.mark.scenario("x")
        def test_m():
            pass
    """))
    project.runpytest_subprocess("--strict-markers").assert_outcomes(passed=1)


def test_xdist_workers_give_the_same_metrics_and_one_summary(project):
    for i in range(4):
        scenario_file(project, f"scenarios/s{i}.scenario.yaml", name=f"s{i}")
    project.makepyfile(test_fixture_run="""
        import pytest

        @pytest.mark.scenario("scenarios/s0.scenario.yaml")
        def test_with_fixture(scenario):
            assert scenario.run().rounds_completed == 3
    """)
    runs = {}
    for workers in ("0", "2"):
        result = project.runpytest_subprocess("-n", workers, "--flopynet-reports", f"reports-{workers}")
        result.assert_outcomes(passed=5)
        summary = result.stdout.str().split("flopynet scenarios", 1)[1]
        assert all(f"s{i}.scenario.yaml::s{i}" in summary or f"s{i} " in summary for i in range(4))
        assert "test_with_fixture" in summary
        runs[workers] = {p.parent.name: p.read_bytes()
                         for p in (project.path / f"reports-{workers}").glob("*/metrics.json")}
    assert len(runs["0"]) == 5 and runs["0"] == runs["2"]


def test_junit_carries_each_gates_verdict_and_no_json(project):
    scenario_file(project, "g.scenario.yaml", name="g", gates="['final_accuracy >= 0.1', 'final_loss <= 0.001']")
    result = project.runpytest_subprocess("--junitxml=junit.xml", "-n", "2")
    result.assert_outcomes(failed=1)
    junit = (project.path / "junit.xml").read_text()
    gates = re.findall(r'<property name="flopynet.gate" value="([^"]*)"', junit)
    assert len(gates) == 2
    assert re.fullmatch(r"final_accuracy &gt;= 0.1: actual 0\.\d+, pass", gates[0]), gates
    assert re.fullmatch(r"final_loss &lt;= 0.001: actual \d\.\d+, fail", gates[1]), gates
    assert '<property name="flopynet" ' not in junit and "{" not in "".join(re.findall(r'value="([^"]*)"', junit))
    # the summary row still reached the xdist controller, with the gates' count
    assert re.search(r"\bg\b.*\bfailed\b", result.stdout.str().split("flopynet scenarios", 1)[1])
