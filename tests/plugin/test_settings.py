"""RunSettings: one table of options becomes the pytest options, their ini keys and the flopynet run
flags; one rule decides the seed and the backend."""
import argparse

import pytest

from pytest_flopynet import ScenarioConfig
from pytest_flopynet.seeds import derive_seed
from pytest_flopynet.settings import OPTIONS, RunSettings, SettingError


@pytest.mark.parametrize("given_on_the_command_line, file_seed, test_id, expected", [
    (False, None, None, 5),  # the run's seed
    (False, None, "t.py::test", derive_seed(5, "t.py::test")),  # under pytest: derived per test
    (False, 7, "t.py::test", 7),  # the file's own seed beats the run's
    (True, 7, None, 5),  # flopynet run --seed 5 beats the file's
])
def test_one_seed_rule(given_on_the_command_line, file_seed, test_id, expected):
    settings = RunSettings(seed=5, seed_overrides_file=given_on_the_command_line)
    assert settings.seed_for(ScenarioConfig(name="s", seed=file_seed), test_id) == expected


def test_backend_run_then_file_then_sim():
    config = ScenarioConfig(name="s", backend="netns")
    assert RunSettings(backend="gns3").backend_for(config) == "gns3"
    assert RunSettings().backend_for(config) == "netns"
    assert RunSettings().backend_for(ScenarioConfig(name="s")) == "sim"


def test_every_option_is_a_pytest_option_an_ini_key_and_a_command_line_flag(pytestconfig):
    parser = argparse.ArgumentParser()
    RunSettings.add_cli_arguments(parser)
    flags = {a.dest for a in parser._actions}
    # flopynet run's --size picks a variant; several seeds are flopynet sweep's --seeds
    assert [opt.name for opt in OPTIONS if opt.cli is None] == ["seeds", "seeds_workers", "size"]
    for opt in OPTIONS:  # pytest raises ValueError for an option or ini key it does not know
        pytestconfig.getoption(f"flopynet_{opt.name}")
        pytestconfig.getini(f"flopynet_{opt.name}")
        assert (opt.name in flags) == (opt.cli is not None)  # cli None: a pytest-only option
    args = parser.parse_args(["--seed", "3", "--executor", "sequential", "--reports", "", "--gate", "a >= 1"])
    settings = RunSettings.from_cli(args)
    assert (settings.seed, settings.seed_overrides_file, settings.executor, settings.reports, settings.gates) == \
        (3, True, "sequential", None, ("a >= 1",))


def test_a_bad_value_names_the_option_and_its_ini_key():
    seed = next(opt for opt in OPTIONS if opt.name == "seed")
    with pytest.raises(SettingError, match=r"^--flopynet-seed / ini flopynet_seed: 'abc' is not an integer$"):
        seed.value("abc")
    executor = next(opt for opt in OPTIONS if opt.name == "executor")
    with pytest.raises(SettingError, match=r"'fast' is not one of auto, sequential, batched, compiled"):
        executor.value("fast")
    assert seed.value("") == 0 and executor.value(None) == "auto"  # unset: the ini default


def test_pytest_reads_options_and_ini_keys_into_settings(pytester):
    pytester.makeini("[pytest]\nflopynet_seed = 9\nflopynet_executor = sequential\nflopynet_gates =\n    a >= 1\n")
    pytester.makepyfile(test_s="""
        from pytest_flopynet.testrun import run_settings

        def test_s(request):
            s = run_settings(request.config)
            assert (s.seed, s.executor, s.threads, s.gates) == (9, "sequential", 1, ("a >= 1", "b <= 2"))
            assert s.reports == request.config.rootpath / "reports"
    """)
    pytester.runpytest_subprocess("--flopynet-gate", "b <= 2").assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("--flopynet-seed", "abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--flopynet-seed / ini flopynet_seed: 'abc' is not an integer"])


def test_gates_later_sources_win_per_metric():
    config = ScenarioConfig(name="s", gates=["final_accuracy >= 0.5", "final_loss <= 2"])
    gates = RunSettings(gates=("final_accuracy >= 0.9",)).gates_for(config, ("final_loss <= 1",))
    assert sorted(map(str, gates)) == ["final_accuracy >= 0.9", "final_loss <= 1"]


def test_a_bad_gate_on_the_command_line_or_in_the_ini_stops_pytest_before_it_runs(pytester):
    pytester.makepyfile(test_s="def test_s():\n    pass\n")
    result = pytester.runpytest_subprocess("--flopynet-gate", "final_accuracy >= high")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--flopynet-gate: cannot parse gate 'final_accuracy >= high'*"])
    pytester.makeini("[pytest]\nflopynet_gates =\n    final_loss << 1\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini flopynet_gates: cannot parse gate 'final_loss << 1'*"])
