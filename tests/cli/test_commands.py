"""The flopynet command as users meet it: one clear line per problem, exit codes, what it prints."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_flopynet import load_scenario, save_scenario, scenario_schema

ROOT = Path(__file__).resolve().parents[2]


BAD_FILES = {
    "unknown_event.yaml": ("events:\n  - {event_type: meteor_strike, trigger_time: 1, target: all_links}\n",
                           "events[0].event_type"),
    "negative_time.yaml": ("events:\n  - {event_type: link_failure, trigger_time: -3, target: s1-s2}\n",
                           "events[0].trigger_time"),
    "unknown_key.yaml": ("fl_config: {rounds: 3}\n", "fl_config.rounds"),
    "string_for_int.yaml": ("fl_config: {total_rounds: ten}\n", "fl_config.total_rounds"),
    "syntax.yaml": ("fl_config: {total_rounds: 3\n", "line 4 column 1"),  # after the 2-line header
    "not_a_mapping.json": ("[1, 2]", "(top level)"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_flopynet_validate_gives_one_clear_line(tmp_path, name):
    text, field = BAD_FILES[name]
    path = tmp_path / name
    # (node_count 11: the 10 default clients per round have clients enough, the file has no second problem)
    header = "" if name.endswith(".json") else "name: bad\nnetwork_config: {topology_type: mesh, switch_count: 2, node_count: 11}\n"
    path.write_text(header + text)
    proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{path}: {field}: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_flopynet_validate_accepts_a_good_file(tmp_path):
    path = save_scenario(load_scenario(ROOT / "scenarios/network_instability/scenario.yaml"), tmp_path / "ok.scenario.yaml")
    proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{path}: ok (network_instability, 4 events)\n"


def test_flopynet_validate_checks_a_scenario_class_file(tmp_path):
    """A scenario.py is a scenario file too: each class's config is checked (it was parsed as YAML)."""
    path = tmp_path / "scenario.py"
    source = textwrap.dedent("""
        from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig
        from pytest_flopynet.scenarios import BaseScenario

        class TwoScenario(BaseScenario):
            config = ScenarioConfig(name="two", fl_config=FLConfig(model_architecture="ARCH", clients_per_round=3),
                                    network_config=NetworkConfig(node_count=4))
    """)
    validate = [sys.executable, "-m", "pytest_flopynet.cli", "validate", str(path)]
    path.write_text(source.replace("ARCH", "logreg"))
    proc = subprocess.run(validate, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, f"{path}: ok (two, 0 events)\n"), proc.stderr
    path.write_text(source.replace("ARCH", "logregg"))
    proc = subprocess.run(validate, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == (f"{path}: fl_config.model_architecture: unknown model 'logregg' "
                           "(available: cnn, logreg, lstm, mlp, mobilenet_v2, resnet18)\n")


def test_flopynet_schema_prints_the_schema():
    proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "schema"], capture_output=True, text=True)
    assert json.loads(proc.stdout) == json.loads(json.dumps(scenario_schema()))


def test_a_missing_file_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "run", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("no scenario ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["../../escape", "/tmp/flopynet-absolute", ".."])
def test_a_scenario_name_cannot_put_reports_outside_the_reports_folder(tiny_config, tmp_path, name):
    import asyncio

    from pytest_flopynet import cli
    from pytest_flopynet.scenarios import ScenarioRunner
    config = tiny_config()
    config.name = name
    path = save_scenario(config, tmp_path / "named.scenario.yaml")
    reports = tmp_path / "deep" / "er" / "reports"
    assert cli.main(["run", str(path), "--reports", str(reports), "-q", "--threads", "1"]) == 0

    async def through_the_runner():
        runner = ScenarioRunner([tmp_path], reports=reports)
        await runner.wait(await runner.run_scenario_from_config(config))
        runner.close()
    asyncio.run(through_the_runner())
    written = sorted(tmp_path.rglob("analysis.json")) + sorted(Path("/tmp").glob("flopynet-absolute*"))
    assert len(written) == 2 and all(reports in p.parents for p in written), written


def test_validate_reports_every_problem_of_a_file_at_once(tmp_path):
    """Wrong types, rules across the fields still valid, registries and targets: one run, one report."""
    path = tmp_path / "many.yaml"
    path.write_text(textwrap.dedent("""
        name: x
        duration_minutes: 1
        fl_config: {total_rounds: ten, clients_per_round: 50, model_architecture: lstn}
        network_config: {node_count: 5}
        events:
          - {event_type: network_partition, trigger_time: soon, target: client_group,
             parameters: {partitioned_clients: [client_9]}}
          - {event_type: link_failure, trigger_time: 999, target: s1-s9, parameters: {bogus: 1}}
        gates: [final_accuracy >= high]
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "validate", str(path)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    fields = [line.split(": ")[1] for line in proc.stderr.splitlines()]
    # the trigger time that is no number is not judged again, nor is the rounds' count
    assert fields == ["events[0].trigger_time", "fl_config.total_rounds", "fl_config.clients_per_round",
                      "events[0].parameters", "events[1].trigger_time", "events[1].parameters.bogus", "gates[0]",
                      "fl_config.model_architecture", "events[1].target"]


def test_the_results_file_survives_a_closed_standard_output(tiny_config, tmp_path):
    """`flopynet run ... | head -1`: head closes the pipe after one line; the JSON is written already."""
    path = save_scenario(tiny_config(), tmp_path / "tiny.scenario.yaml")
    out = tmp_path / "results.json"
    proc = subprocess.Popen([sys.executable, "-m", "pytest_flopynet.cli", "run", str(path), "-q", "--reports", "",
                             "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command prints anything
    proc.wait(timeout=300)
    assert "Traceback" not in proc.stderr.read().decode()
    assert json.loads(out.read_text())["execution_summary"]["fl_rounds_completed"] == 3


def test_flopynet_list_searches_the_package_and_the_given_folders_and_names_what_it_cannot_read(tiny_config):
    """From a folder that is not a project, `list` shows the built-in scenarios only; given folders add
    theirs; a folder or file it cannot read is named on stderr and the rest still list. Root reads
    everything, so the command then runs as the unprivileged user nobody."""
    import os
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="flopynet-list-"))
    try:
        (base / "empty").mkdir()
        (base / "walked" / "deep").mkdir(parents=True)
        save_scenario(tiny_config(), base / "walked" / "deep" / "mine.scenario.yaml")
        save_scenario(tiny_config(), base / "walked" / "secret.scenario.yaml")
        (base / "walked" / "locked").mkdir()
        for path in (base / "walked" / "secret.scenario.yaml", base / "walked" / "locked"):
            path.chmod(0)
        for path in [base, *base.rglob("*")]:
            if path.name not in ("secret.scenario.yaml", "locked"):
                path.chmod(0o755 if path.is_dir() else 0o644)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        if as_user and not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file unreadable")

        def flopynet_list(*paths):
            return subprocess.run([*as_user, sys.executable, "-m", "pytest_flopynet.cli", "list", *paths],
                                  cwd=base / "empty", capture_output=True, text=True, timeout=120)

        alone = flopynet_list()
        assert alone.returncode == 0, alone.stderr
        names = [line.split()[0] for line in alone.stdout.splitlines()[1:]]
        assert {"quickstart", "basic_fl_training_ci", "network_instability_ci", "adversarial_attacks_ci",
                "custom_edge_scenario_ci"} <= set(names) and tiny_config().name not in names
        given = flopynet_list(str(base / "walked"))
        assert given.returncode == 1  # something could not be read
        mine = [line for line in given.stdout.splitlines() if line.startswith(tiny_config().name + " ")]
        assert len(mine) == 1 and mine[0].endswith(str(base / "walked" / "deep" / "mine.scenario.yaml"))
        assert "quickstart" in given.stdout
        assert sorted(given.stderr.splitlines()) == [
            f"{base / 'walked' / 'locked'}: cannot load: permission denied: folder not readable",
            f"{base / 'walked' / 'secret.scenario.yaml'}: cannot load: (top level): cannot read the file: Permission denied"]
        missing = flopynet_list(str(base / "nowhere"))
        assert (missing.returncode, missing.stderr.strip()) == (2, f"flopynet list: no such folder: {base / 'nowhere'}")
    finally:
        for path in base.rglob("*"):
            path.chmod(0o755)
        shutil.rmtree(base)
