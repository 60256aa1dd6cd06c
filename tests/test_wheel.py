"""Issue 22's 'done when', as a new user meets the plugin: the built wheel in a fresh virtual environment,
used from an empty directory. Slow (a virtual environment is installed): runs in CI or with --run-slow."""
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(argv, cwd, timeout=900, env=None):
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """(bin folder of a fresh venv holding the built wheel and its test extra, an empty directory)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("pytest_flopynet", "scenarios"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", source], base)
    if built.returncode:
        pytest.skip(f"cannot build the wheel (the package index is needed for setuptools): {built.stderr[-500:]}")
    (wheel,) = (base / "dist").glob("pytest_flopynet-*.whl")
    venv = _run([sys.executable, "-m", "venv", base / "venv"], base)
    assert venv.returncode == 0, venv.stderr
    bin_ = base / "venv" / "bin"
    installed = _run([bin_ / "pip", "install", "-q", "torch==2.13.0", f"{wheel}[test]"], base)
    if installed.returncode:
        pytest.skip(f"cannot install the wheel's dependencies: {installed.stderr[-500:]}")
    (base / "empty").mkdir()
    return bin_, base / "empty", wheel


def test_the_wheel_ships_the_built_in_scenarios_and_the_license_but_not_the_tests(user):
    import zipfile
    names = zipfile.ZipFile(user[2]).namelist()
    assert "pytest_flopynet/builtin/quickstart/scenario.yaml" in names
    assert "pytest_flopynet/builtin/network_instability/network_instability_ci.scenario.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if Path(n).name.startswith(("test_", "conftest"))]
    metadata = zipfile.ZipFile(user[2]).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    triton = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: triton")]
    assert triton and all('extra == "kernels"' in line for line in triton)  # not in the test extra users install


def test_from_an_empty_directory_list_and_run_find_the_built_in_scenarios(user):
    bin_, empty, _ = user
    listed = _run([bin_ / "flopynet", "list"], empty)
    assert listed.returncode == 0, listed.stderr
    families = {line.split()[1] for line in listed.stdout.splitlines()[1:]}
    assert {"basic_fl_training", "network_instability", "adversarial_attacks", "custom_edge"} <= families
    ran = _run([bin_ / "flopynet", "run", "quickstart", "-q", "--json", "quickstart.json"], empty)
    assert ran.returncode == 0, ran.stderr
    assert "quickstart: completed" in ran.stdout and (empty / "quickstart.json").stat().st_size > 1000


def test_a_users_own_project_keeps_its_hypothesis_settings_and_gets_usage_errors_and_gate_properties(user, tmp_path):
    bin_, _, _ = user
    (tmp_path / "test_users_own.py").write_text(textwrap.dedent('''
        import pytest
        from hypothesis import given, settings, strategies as st

        @given(st.integers())
        def test_hypothesis_defaults_are_untouched(x):
            assert settings().max_examples == 100
            assert settings().deadline.total_seconds() == 0.2

        @pytest.mark.scenario("quickstart")
        @pytest.mark.gate("final_accuracy >= 0.5", "fl_rounds_completed >= 20")
        def test_quickstart_gated(scenario):
            scenario.run()
        '''))
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path)}
    bad = _run([bin_ / "pytest", "--flopynet-backend", "nosuch"], tmp_path, env=env)
    assert bad.returncode == 4
    assert [line for line in bad.stderr.splitlines() if line.strip()] == [
        "ERROR: --flopynet-backend / ini flopynet_backend: 'nosuch' is not one of sim, netns, gns3"]
    good = _run([bin_ / "pytest", "-p", "no:cacheprovider", "--junitxml=junit.xml"], tmp_path, env=env)
    assert good.returncode == 0, good.stdout[-3000:]
    assert re.search(r"\b2 passed\b", good.stdout)
    junit = (tmp_path / "junit.xml").read_text()
    gates = re.findall(r'<property name="flopynet.gate" value="([^"]*)"', junit)
    assert len(gates) == 2 and gates[0].startswith("final_accuracy &gt;= 0.5: actual 0.") and gates[0].endswith(", pass")
    assert gates[1] == "fl_rounds_completed &gt;= 20: actual 20, pass"
    assert '<property name="flopynet" ' not in junit and "{" not in "".join(re.findall(r'value="([^"]*)"', junit))
