"""Several seeds per scenario and gates over them (mean, min, ci95_low ...): pytest processes in a scratch
project (pytester), checked against runs of the same seeds made here, and the statistics by hand."""
import importlib.util
import json
import math
import textwrap

import pytest

from pytest_flopynet import load_scenario, run_scenario
from pytest_flopynet.analysis.gates import evaluate
from pytest_flopynet.analysis.spread import describe
from pytest_flopynet.model.gates import GateSyntaxError, parse_gate
from pytest_flopynet.seeds import derive_seed

SEEDED = """\
name: tiny
duration_minutes: 10
seeds: 3
fl_config:
  model_architecture: logreg
  total_rounds: 2
  clients_per_round: 3
  learning_rate: 0.05
  client_data_sizes: [40, 40, 40]
network_config: {topology_type: star, node_count: 4, link_bandwidth_mbps: 10, base_latency_ms: 5}
"""
INI = "[pytest]\naddopts = --strict-markers -p no:cacheprovider\n"
T_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (tables)


def test_statistics_of_three_runs_by_hand():
    d = describe([0.90, 0.92, 0.94])
    half = T_975_2 * 0.02 / math.sqrt(3)  # sample std of 0.90, 0.92, 0.94 is 0.02
    assert (d["n"], d["min"], d["max"]) == (3, 0.90, 0.94)
    assert d["mean"] == pytest.approx(0.92) and d["std"] == pytest.approx(0.02) and d["median"] == pytest.approx(0.92)
    assert d["ci95"] == pytest.approx([0.92 - half, 0.92 + half])
    assert describe([0.5])["ci95"] is None and describe([0.5])["std"] == 0.0


def test_gates_over_seeds_plain_ones_hold_for_every_seed():
    runs = [{"execution_summary": {"final_accuracy": a}} for a in (0.90, 0.92, 0.94)]
    plain, mean, low, one = (parse_gate(g) for g in ("final_accuracy >= 0.91", "mean(final_accuracy) >= 0.91",
                                                      "ci95_low(final_accuracy) >= 0.88", "ci95_low(final_accuracy) > 0"))
    out = evaluate([plain, mean, low], runs[0], runs)
    assert [o.passed for o in out] == [False, True, False]  # 0.90 fails the plain gate; low = 0.8703
    assert out[0].actual == 0.90 and out[1].actual == pytest.approx(0.92)
    assert out[2].actual == pytest.approx(0.92 - T_975_2 * 0.02 / math.sqrt(3))
    (alone,) = evaluate([one], runs[0])
    assert alone.actual is None and not alone.passed and "needs 2 or more seeds" in str(alone)


def test_the_gate_grammar_takes_a_statistic():
    g = parse_gate(" ci95_low( metrics_analysis.accuracy.final ) >= .5")
    assert (g.stat, g.metric, g.op, g.threshold) == ("ci95_low", "metrics_analysis.accuracy.final", ">=", 0.5)
    assert str(g) == "ci95_low(metrics_analysis.accuracy.final) >= 0.5"
    with pytest.raises(GateSyntaxError, match="stat one of mean, median, min, max, std, ci95_low, ci95_high"):
        parse_gate("average(final_accuracy) >= 0.5")


def test_a_mean_gate_over_three_seeds_passes_and_fails_at_the_mean_of_the_same_seeds_run_here(pytester):
    pytester.makeini(INI)
    path = pytester.path / "s.scenario.yaml"
    path.write_text(SEEDED)
    base = derive_seed(0, "s.scenario.yaml::tiny")  # the test's seed: the run's (0) and its id
    finals = [run_scenario(load_scenario(path), seed=base + i).final_accuracy for i in range(3)]
    mean = sum(finals) / 3
    passed = pytester.runpytest_subprocess("--flopynet-gate", f"mean(final_accuracy) >= {mean - 1e-6!r}")
    passed.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "reports" / "s.scenario.yaml_tiny" / "seeds.json").read_text())
    assert report["seeds"] == [base, base + 1, base + 2]
    assert [r["final_accuracy"] for r in report["runs"]] == pytest.approx(finals, abs=1e-12)
    assert report["spread"]["final_accuracy"]["mean"] == pytest.approx(mean)
    assert (pytester.path / "reports" / "s.scenario.yaml_tiny" / "seeds.png").stat().st_size > 10_000
    assert (pytester.path / "reports" / "s.scenario.yaml_tiny" / f"seed_{base + 2}" / "analysis.json").is_file()
    failed = pytester.runpytest_subprocess("--flopynet-gate", f"mean(final_accuracy) >= {mean + 1e-6!r}")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines([f"*scenario 'tiny' over seeds {base}, {base + 1}, {base + 2}: 1 of 1 gates failed:*",
                                 f"*[[]FAIL[]] mean(final_accuracy) >= *  (actual: {mean:.6g})*"])
    # one seed from the command line: the same gate is judged on that run alone
    single = pytester.runpytest_subprocess("--flopynet-seeds", "1", "--flopynet-gate",
                                           f"mean(final_accuracy) >= {finals[0] - 1e-6!r}")
    single.assert_outcomes(passed=1)


def test_the_seeds_marker_reruns_a_fixture_test_and_a_bad_count_is_a_usage_error(pytester):
    pytester.makeini(INI)
    (pytester.path / "tiny.yaml").write_text(SEEDED.replace("seeds: 3\n", ""))  # not collected itself
    pytester.makepyfile(test_m=textwrap.dedent("""
        import pytest

        @pytest.mark.scenario("tiny.yaml")
        @pytest.mark.seeds(2)
        @pytest.mark.gate("ci95_high(final_accuracy) >= 0", "fl_rounds_completed == 2")
        def test_two(scenario):
            assert scenario.run().rounds_completed == 2  # the first seed's run

        @pytest.mark.scenario("tiny.yaml")
        @pytest.mark.gate("ci95_low(final_accuracy) >= 0")
        def test_one(scenario):
            scenario.run()
    """))
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ci95_low(final_accuracy) >= 0  (actual: not available: a confidence interval "
                                 "needs 2 or more seeds)*"])
    base = derive_seed(0, "test_m.py::test_two")
    report = json.loads((pytester.path / "reports" / "test_m.py_test_two" / "seeds.json").read_text())
    assert report["seeds"] == [base, base + 1] and all(r["fl_rounds_completed"] == 2 for r in report["runs"])
    bad = pytester.runpytest_subprocess("--flopynet-seeds", "0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--flopynet-seeds / ini flopynet_seeds: '0' is not a whole number of 1 or more*"])


def _seeds_report(pytester, folder: str) -> dict:
    return json.loads((pytester.path / "reports" / folder / "seeds.json").read_text())


def test_seeds_run_at_once_in_other_processes_give_the_same_report_as_one_after_another(pytester):
    """The first seed runs in the test's process while the others run in spawned processes (or on Ray):
    seeds.json, every seed's analysis.json and the gates' verdicts equal those of the seeds run in turn."""
    pytester.makeini(INI)
    (pytester.path / "s.scenario.yaml").write_text(SEEDED)
    (pytester.path / "tiny.yaml").write_text(SEEDED.replace("seeds: 3\n", ""))
    pytester.makepyfile(test_m=textwrap.dedent("""
        import pytest
        from pytest_flopynet import ScenarioEvent

        @pytest.mark.scenario("tiny.yaml")
        @pytest.mark.seeds(3)
        def test_fixture(scenario):
            scenario.add_event(ScenarioEvent(event_type="network_latency_increase", target="all_links",
                                             trigger_time=0.0, duration=30.0, parameters={"latency_increase_ms": 80}))
            scenario.run()
    """))
    folders = ("s.scenario.yaml_tiny", "test_m.py_test_fixture")
    reports = {}
    for workers in ("1", "2", "ray"):
        if workers == "ray" and importlib.util.find_spec("ray") is None:
            continue
        result = pytester.runpytest_subprocess("--flopynet-seeds-workers", workers)
        result.assert_outcomes(passed=2)
        reports[workers] = [_seeds_report(pytester, f) for f in folders]
        analyses = [json.loads(p.read_text()) for f in folders
                    for p in sorted((pytester.path / "reports" / f).glob("seed_*/analysis.json"))]
        reports[workers].append([(a["execution_summary"], len(a["events"])) for a in analyses])
    assert len(reports["1"][2]) == 5  # a folder for every seed but the fixture test's first (the test's own)
    assert reports["2"] == reports["1"]
    if "ray" in reports:
        assert reports["ray"] == reports["1"]
    assert [n for _, n in reports["1"][2]] == [0, 0, 0, 1, 1]  # the body's event ran on the other seeds too


def test_seeds_stay_in_the_tests_process_where_a_hook_listens_and_a_bad_worker_count_is_a_usage_error(pytester):
    pytester.makeini(INI)
    (pytester.path / "s.scenario.yaml").write_text(SEEDED)
    pytester.makeconftest(textwrap.dedent("""
        import os
        def pytest_flopynet_round_end(round, metrics, execution):
            with open("rounds.txt", "a") as f:
                f.write(f"{os.getpid()} {execution.seed} {round}\\n")
    """))
    pytester.runpytest_subprocess("--flopynet-seeds-workers", "2").assert_outcomes(passed=1)
    lines = (pytester.path / "rounds.txt").read_text().split("\n")[:-1]
    assert len(lines) == 3 * 2 and len({line.split()[0] for line in lines}) == 1  # 3 seeds x 2 rounds, one process
    bad = pytester.runpytest_subprocess("--flopynet-seeds-workers", "many")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--flopynet-seeds-workers / ini flopynet_seeds_workers: 'many' is not auto, ray or a "
                              "whole number of 1 or more*"])
