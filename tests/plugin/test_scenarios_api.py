"""Scenario discovery (folders, scenario.py classes, entry points), BaseScenario hooks, and the
awaitable ScenarioRunner of the original documentation."""
import asyncio
import textwrap
from pathlib import Path

import pytest

from pytest_flopynet import ScenarioState
from pytest_flopynet.discovery import discover, find_scenario
from pytest_flopynet.scenarios import BaseScenario, ScenarioRunner

TINY = """\
name: {name}
duration_minutes: 10
fl_config:
  model_architecture: logreg
  total_rounds: {rounds}
  clients_per_round: 2
  client_data_sizes: [40, 40]
  learning_rate: 0.2
network_config: {{node_count: 3}}
"""

CLASS_SCENARIO = '''
from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig, ScenarioEvent
from pytest_flopynet.scenarios import BaseScenario

CALLS = []


class SlowLinkScenario(BaseScenario):
    config = ScenarioConfig(name="slow_link", duration_minutes=10,
                            fl_config=FLConfig(model_architecture="logreg", total_rounds=3, clients_per_round=2,
                                               client_data_sizes=[40, 40]),
                            network_config=NetworkConfig(node_count=3), tags=["network_instability"])

    def setup(self, scenario):
        CALLS.append("setup")
        scenario.add_event(ScenarioEvent(event_type="network_latency_increase", trigger_time=0.1,
                                         target="all_links", parameters={"latency_increase_ms": 40}))

    def teardown(self, scenario, result):
        CALLS.append(("teardown", result.rounds_completed))


class NotAScenarioHelper:  # ignored: its name does not end in Scenario
    pass
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "scenarios" / "a").mkdir(parents=True)
    (tmp_path / "scenarios" / "a" / "scenario.yaml").write_text(TINY.format(name="a", rounds=2))
    (tmp_path / "scenarios" / "a" / "a_ci.scenario.yaml").write_text(TINY.format(name="a_ci", rounds=1))
    (tmp_path / "scenarios" / "slow").mkdir()
    (tmp_path / "scenarios" / "slow" / "scenario.py").write_text(CLASS_SCENARIO)
    (tmp_path / "scenarios" / "broken").mkdir()
    (tmp_path / "scenarios" / "broken" / "scenario.yaml").write_text(TINY.format(name="broken", rounds=-1))
    return tmp_path


def test_discovery_finds_folders_files_and_classes_and_reports_what_fails(project):
    catalogue = discover([project], entry_points_too=False, builtin=False)
    assert sorted(catalogue.scenarios) == ["a", "a_ci", "slow_link"]
    (where, reason), = catalogue.errors
    assert where == str(project / "scenarios" / "broken" / "scenario.yaml")
    assert "fl_config.total_rounds: -1 is less than the minimum of 1" in reason
    assert isinstance(catalogue.scenarios["slow_link"], BaseScenario)
    assert catalogue.scenarios["slow_link"].source == project / "scenarios" / "slow" / "scenario.py"


def test_a_broken_scenario_py_is_reported_with_its_reason(project):
    (project / "scenarios" / "bad").mkdir()
    (project / "scenarios" / "bad" / "scenario.py").write_text("import no_such_module_here\n")
    (project / "scenarios" / "empty").mkdir()
    (project / "scenarios" / "empty" / "scenario.py").write_text("class Helper: pass\n")
    errors = dict(discover([project], entry_points_too=False, builtin=False).errors)
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in errors[
        str(project / "scenarios" / "bad" / "scenario.py")]
    assert "no class whose name ends in 'Scenario'" in errors[str(project / "scenarios" / "empty" / "scenario.py")]


def test_class_scenarios_run_their_hooks(project):
    scenario = find_scenario("slow", [project])
    module_calls = __import__(type(scenario).__module__).CALLS
    result = scenario.execute(seed=0)
    assert module_calls == ["setup", ("teardown", 3)]
    assert [e["event_type"] for e in result.events] == ["network_latency_increase"]


def test_names_resolve_by_folder_by_file_name_and_by_size(project, monkeypatch):
    assert find_scenario("a", [project]).config.name == "a"
    assert find_scenario("a_ci", [project]).config.name == "a_ci"  # a file beside its full size
    assert find_scenario("a", [project], size="ci").config.name == "a_ci"
    monkeypatch.setenv("FLOPYNET_SCENARIO_SIZE", "ci")
    assert find_scenario("a", [project]).config.name == "a_ci"


def test_entry_points_of_other_packages(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "shipped_pkg").mkdir(parents=True)
    (site / "shipped_pkg" / "__init__.py").write_text(textwrap.dedent('''
        from pathlib import Path
        from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig
        FOLDER = Path(__file__).parent / "edge"

        def make():
            return ScenarioConfig(name="shipped", fl_config=FLConfig(model_architecture="logreg", total_rounds=1,
                                  clients_per_round=2, client_data_sizes=[30, 30]),
                                  network_config=NetworkConfig(node_count=3))
        '''))
    (site / "shipped_pkg" / "edge").mkdir()
    (site / "shipped_pkg" / "edge" / "scenario.yaml").write_text(TINY.format(name="shipped_folder", rounds=1))
    dist = site / "shipped_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shipped-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pytest_flopynet.scenarios]\nshipped = shipped_pkg:make\n"
                                           "folder = shipped_pkg:FOLDER\nbroken = shipped_pkg:nothing_here\n")
    monkeypatch.syspath_prepend(str(site))
    catalogue = discover([tmp_path / "nowhere"])
    assert {"shipped", "shipped_folder"} <= set(catalogue.scenarios)
    assert any(where == "entry point broken" and "cannot load" in reason for where, reason in catalogue.errors)
    result = find_scenario("shipped", [tmp_path]).execute(seed=1)
    assert result.rounds_completed == 1


def test_runner_status_results_pause_resume_and_cancel(project):
    states = []
    runner = ScenarioRunner([project], reports=None, status_callbacks=[lambda ex: states.append(str(ex.state))])

    async def main():
        sid = await runner.run_scenario("a")
        results = await runner.get_scenario_results(sid)
        status = await runner.get_scenario_status(sid)
        assert status["state"] == "completed" and status["current_round"] == 2 and status["total_rounds"] == 2
        assert results["execution_summary"]["fl_rounds_completed"] == 2
        # paused before it starts, the run waits; resume lets it finish
        sid2 = await runner.run_scenario("a")
        await runner.pause_scenario(sid2)
        for _ in range(200):
            if (await runner.get_scenario_status(sid2))["state"] == "paused":
                break
            await asyncio.sleep(0.01)
        assert (await runner.get_scenario_status(sid2))["state"] == "paused"
        await runner.resume_scenario(sid2)
        assert (await runner.wait(sid2)).state == ScenarioState.COMPLETED
        sid3 = await runner.run_scenario("a")
        await runner.cancel_scenario(sid3)
        assert (await runner.wait(sid3)).state == ScenarioState.CANCELLED
        with pytest.raises(Exception, match="no scenario run 'nope'"):
            await runner.get_scenario_status("nope")

    asyncio.run(main())
    runner.close()
    assert states[:4] == ["initializing", "running", "completed", "initializing"]
    assert "paused" in states and states[-1] == "cancelled"


@pytest.mark.slow  # minutes: runs in CI or with --run-slow
def test_the_original_documentation_usage_examples(monkeypatch, tmp_path, capsys):
    """The three usage examples as written there (package name aside), on the built-in scenarios at
    CI size (FLOPYNET_SCENARIO_SIZE=ci), from the project folder."""
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    monkeypatch.setenv("FLOPYNET_SCENARIO_SIZE", "ci")
    out = tmp_path / "custom_edge_scenario.json"

    async def example():
        # 1. Running a Basic Scenario
        from pytest_flopynet.scenarios import ScenarioRunner
        from pytest_flopynet import ScenarioConfig, FLConfig, ScenarioEvent  # noqa: F401
        runner = ScenarioRunner(reports=tmp_path / "reports")
        scenario_id = await runner.run_scenario("basic_fl_training")
        status = await runner.get_scenario_status(scenario_id)
        print(f"Scenario status: {status['state']}")
        print(f"Current round: {status['current_round']}")
        results = await runner.get_scenario_results(scenario_id)
        print(f"Final accuracy: {results['execution_summary']['final_accuracy']}")

        # 2. Custom Scenario Creation
        custom_scenario = ScenarioConfig(
            name="custom_edge_scenario",
            description="Edge computing FL with intermittent connectivity",
            version="1.0.0",
            author="Research Team",
            duration_minutes=40,
            fl_config=FLConfig(
                model_type="pytorch",
                model_architecture="mobilenet_v2",
                total_rounds=25,
                clients_per_round=5,
                local_epochs=10,  # More local training for edge devices
                aggregation_method="fedavg"
            ),
            events=[
                # Simulate edge device disconnections
                ScenarioEvent(
                    event_type="client_failure",
                    trigger_time=600,
                    target="client_2",
                    parameters={"failure_type": "intermittent", "reconnect_probability": 0.3},
                    duration=300
                )
            ]
        )
        await runner.save_scenario_config(custom_scenario, str(out))
        scenario_id = await runner.run_scenario_from_config(custom_scenario)
        custom_id = scenario_id
        await runner.cancel_scenario(custom_id)  # the example leaves the full-size run going; stop it

        # 3. Batch Scenario Execution
        scenarios = [
            "basic_fl_training",
            "network_instability",
            "adversarial_attacks"
        ]
        results = {}
        for scenario_name in scenarios:
            scenario_id = await runner.run_scenario(scenario_name)
            results[scenario_name] = await runner.get_scenario_results(scenario_id)
        comparison = runner.compare_scenarios(results)
        print(f"Best performing scenario: {comparison['best_accuracy']['scenario']}")
        print(f"Most robust scenario: {comparison['most_robust']['scenario']}")
        return runner, custom_id, results, comparison

    runner, custom_id, results, comparison = asyncio.run(example())
    text = capsys.readouterr().out
    assert "Scenario status: " in text and "Final accuracy: 0." in text
    assert (await_(runner.wait(custom_id))).state == ScenarioState.CANCELLED
    from pytest_flopynet import load_scenario
    saved = load_scenario(out)
    assert saved.fl_config.model_architecture == "mobilenet_v2" and saved.events[0].trigger_time == 600
    assert [r["scenario_name"] for r in results.values()] == ["basic_fl_training_ci", "network_instability_ci",
                                                              "adversarial_attacks_ci"]
    accuracies = {name: r["execution_summary"]["final_accuracy"] for name, r in results.items()}
    assert comparison["best_accuracy"]["scenario"] == max(accuracies, key=accuracies.get)
    assert f"Best performing scenario: {comparison['best_accuracy']['scenario']}" in text
    assert f"Most robust scenario: {comparison['most_robust']['scenario']}" in text
    runner.close()


def await_(awaitable):
    return asyncio.run(_wrap(awaitable))


async def _wrap(awaitable):
    return await awaitable
