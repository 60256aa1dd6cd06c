"""The README's (and docs/guide.md's) commands and examples, run as written so they cannot rot."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


GUIDE = (ROOT / "docs" / "guide.md").read_text()  # the guide's sections beyond the README


def _section(heading: str) -> str:
    text = README if f"## {heading}\n" in README else GUIDE
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def block(heading: str, lang: str) -> str:
    section = _section(heading)
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_ci_runs_the_readmes_setup_and_test_commands():
    ci = (ROOT / ".ci/run").read_text().splitlines()
    setup = block("Set-up", "bash").strip().splitlines()
    assert all(line in ci for line in setup)
    tests = README.split("**The test suite**", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", tests, re.S).group(1)
    assert command == "pytest -n auto" and ci[-1] == command


def test_the_scenario_file_example_validates_and_runs(tmp_path):
    path = tmp_path / "quickstart.scenario.yaml"
    path.write_text(block("A scenario file", "yaml"))
    cli = [sys.executable, "-m", "pytest_flopynet.cli"]
    assert subprocess.run([*cli, "validate", str(path)], capture_output=True).returncode == 0
    run = subprocess.run([*cli, "run", str(path), "--reports", ""], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "[PASS] final_accuracy >= 0.9" in run.stdout


def test_the_pytest_example_passes(pytester):
    shutil.copytree(ROOT / "scenarios" / "quickstart", pytester.path / "scenarios" / "quickstart",
                    ignore=shutil.ignore_patterns("test_*.py", "__pycache__"))
    pytester.makepyfile(test_readme_example=block("A scenario as a pytest test", "python"))
    result = pytester.runpytest_subprocess("test_readme_example.py", "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_documented_option_defaults_are_the_real_ones(pytester):
    pytester.makepyfile(test_o="""
        def test_o(pytestconfig):
            ini = {k: pytestconfig.getini(k) for k in
                   ("flopynet_seed", "flopynet_backend", "flopynet_reports", "flopynet_data_dir", "flopynet_gates",
                    "flopynet_executor")}
            assert ini == {"flopynet_seed": "0", "flopynet_backend": "", "flopynet_reports": "reports",
                           "flopynet_data_dir": "", "flopynet_gates": [], "flopynet_executor": "auto"}
    """)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    for row in ("| `--flopynet-seed N` | `flopynet_seed` | 0 |", "| `--flopynet-backend B` | `flopynet_backend` | |",
                "| `--flopynet-reports DIR` | `flopynet_reports` | reports |",
                "| `--flopynet-executor E` | `flopynet_executor` | auto |"):
        assert row in README


def blocks(heading: str, lang: str) -> list[str]:
    section = _section(heading)
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def test_the_scenario_class_example_is_collected_and_runs_its_hooks(pytester):
    folder = pytester.path / "scenarios" / "flaky_uplink"
    folder.mkdir(parents=True)
    (folder / "scenario.py").write_text(block("Scenario classes, and scenarios from other packages", "python"))
    result = pytester.runpytest_subprocess("-m", "network_instability", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*scenarios/flaky_uplink/scenario.py::flaky_uplink PASSED*"])


@pytest.mark.slow  # minutes: runs in CI or with --run-slow
def test_the_python_api_example_runs(tmp_path):
    script = tmp_path / "api_example.py"
    script.write_text(block("The Python API", "python").replace('reports="reports"', f'reports="{tmp_path}"'))
    run = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[0] in ("pending", "initializing", "running", "completed")
    assert 0.9 <= float(lines[1]) <= 1.0  # network_instability_ci's gate
    assert "'scenario':" in lines[2]


@pytest.mark.slow  # minutes: runs in CI or with --run-slow
def test_the_command_line_examples_run(tmp_path):
    reports = tmp_path / "reports"
    for command in blocks("The command line", "bash")[0].strip().splitlines():
        argv = [str(reports) + word[len("reports"):] if word.startswith("reports") else word
                for word in command.split()]
        assert argv[0] == "flopynet"
        run = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", *argv[1:]], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, (command, run.stderr)
    assert "best_accuracy: network_instability_ci-seed" in run.stdout
    assert (reports / "compare.png").stat().st_size > 10_000


def test_flopynet_list_shows_the_built_in_scenarios():
    run = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "list"], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in run.stdout.splitlines()[1:]}
    for family, name in [("basic_fl_training", "basic_fl_training"), ("network_instability", "network_instability"),
                         ("adversarial_attacks", "adversarial_attacks"), ("custom_edge", "custom_edge_scenario")]:
        assert rows[name] == [family, "full", "sim"] and rows[f"{name}_ci"] == [family, "ci", "sim"]


def test_the_fuzzing_example_passes(pytester):
    shutil.copytree(ROOT / "scenarios" / "fuzzed_schedules", pytester.path / "scenarios" / "fuzzed_schedules",
                    ignore=shutil.ignore_patterns("test_*.py", "__pycache__"))
    pytester.makepyfile(test_fuzz_example=block("Fuzzing schedules with Hypothesis", "python"))
    result = pytester.runpytest_subprocess("test_fuzz_example.py", "-p", "no:cacheprovider",
                                           "--hypothesis-profile", "dev", "--hypothesis-show-statistics")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*20 passing*"])


def test_the_own_model_and_data_set_example_passes_and_a_typo_names_the_file(pytester):
    heading = "Your own models and data sets"
    (pytester.path / "conftest.py").write_text(block(heading, "python"))
    scenario = pytester.path / "moons.scenario.yaml"
    scenario.write_text(block(heading, "yaml"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["moons * 20 * final_accuracy >= 0.9 * pass * passed"])
    scenario.write_text(block(heading, "yaml").replace("two_layer", "two_layers"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"{scenario}: fl_config.model_architecture: unknown model 'two_layers' "
                                 "(available: cnn, logreg, lstm, mlp, mobilenet_v2, resnet18, two_layer)"])
