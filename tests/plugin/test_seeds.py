"""Several seeds per scenario and gates over them (mean, min, ci95_low ...): pytest processes in a scratch
project (pytester), checked against runs of the same seeds made here, and the statistics by hand."""
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
