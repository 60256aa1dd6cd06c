"""The plugin is a guest in the user's project: its Hypothesis settings reach its own fuzzed scenario
tests only; the project's other @given tests keep what they would have without the plugin (Hypothesis's
defaults, which differ under CI, or the project's own profile)."""
import pytest

pytest.importorskip("hypothesis")

USER_TESTS = """
    import time
    from pathlib import Path

    import pytest
    from hypothesis import given, settings, strategies as st

    COUNT = {"fuzzed": 0, "plain": 0}

    def test_plain_settings():
        Path("settings.txt").write_text(repr(settings.default))

    @given(st.integers())
    def test_users_own_given(x):
        COUNT["plain"] += 1
"""
FUZZED = """
    from pytest_flopynet import ScenarioConfig

    @pytest.fixture
    def scenario_config():  # scenario_runs's scenario (never run here)
        return ScenarioConfig(name="x")

    @given(st.integers())
    def test_a_fuzzed_scenario_test(scenario_runs, x):
        COUNT["fuzzed"] += 1
        time.sleep(0.25)  # past Hypothesis's default deadline of 200 ms: a fuzzed test has none

    def test_counts():
        Path("counts.txt").write_text(f"{COUNT['plain']} {COUNT['fuzzed']}")
"""
MINE = "from hypothesis import settings\nsettings.register_profile('mine', max_examples=7)\nsettings.load_profile('mine')\n"


@pytest.mark.parametrize("ci, conftest, plain, fuzzed", [
    (None, "", 100, 20),
    ("true", "", 100, 50),
    (None, MINE, 7, 20),
])
def test_user_settings_are_untouched_and_fuzzed_tests_get_theirs(pytester, monkeypatch, ci, conftest, plain, fuzzed):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    if conftest:
        pytester.makeconftest(conftest)
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.runpytest_subprocess("-p", "no:flopynet", "-p", "no:cacheprovider").assert_outcomes(passed=2)
    without_plugin = (pytester.path / "settings.txt").read_text()
    pytester.makepyfile(test_user=USER_TESTS + FUZZED)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert (pytester.path / "settings.txt").read_text() == without_plugin
    assert (pytester.path / "counts.txt").read_text() == f"{plain} {fuzzed}"


def test_a_chosen_profile_sets_the_fuzzed_tests_examples(pytester):
    pytester.makepyfile(test_user=USER_TESTS + FUZZED)
    pytester.runpytest_subprocess("--hypothesis-profile", "dev", "-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert (pytester.path / "counts.txt").read_text() == "20 20"
