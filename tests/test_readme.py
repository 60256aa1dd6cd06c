"""The README's commands and examples, run as written so they cannot rot."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block(heading: str, lang: str) -> str:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_ci_runs_the_readmes_setup_and_test_commands():
    ci = (ROOT / ".ci/run").read_text().splitlines()
    setup = block("Set-up", "bash").strip().splitlines()
    assert all(line in ci for line in setup)
    tests = README.split("**The test suite**", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", tests, re.S).group(1)
    assert command == "pytest" and ci[-1] == command


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
                   ("flopynet_seed", "flopynet_backend", "flopynet_reports", "flopynet_data_dir", "flopynet_gates")}
            assert ini == {"flopynet_seed": "0", "flopynet_backend": "", "flopynet_reports": "reports",
                           "flopynet_data_dir": "", "flopynet_gates": []}
    """)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    for row in ("| `--flopynet-seed N` | `flopynet_seed` | 0 |", "| `--flopynet-backend B` | `flopynet_backend` | |",
                "| `--flopynet-reports DIR` | `flopynet_reports` | reports |"):
        assert row in README
