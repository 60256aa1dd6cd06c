"""How a pytest test runs a scenario: its seed, report folder, requirements, gates and the metrics
it records for JUnit and the terminal summary. Shared by the fixtures and the collected scenario files."""
from __future__ import annotations

from pathlib import Path

import pytest

from .analysis.compare import headline
from .analysis.gates import evaluate, failure_message
from .model import ScenarioConfig, save_scenario
from .report import allure
from .report.exports import folder_name
from .seeds import derive_seed
from .settings import RunSettings


def session():
    """The session module (session.py), imported when a test first runs a scenario: it imports torch,
    which a pytest run without scenarios never pays for. The plugin's one way to the heavy parts."""
    from . import session as module
    return module


def run_settings(config: pytest.Config) -> RunSettings:
    """The run's settings, read once from the options and ini keys (pytest_configure checks them)."""
    if SETTINGS not in config.stash:
        config.stash[SETTINGS] = RunSettings.from_pytest(config)
    return config.stash[SETTINGS]


SETTINGS = pytest.StashKey[RunSettings]()
SUMMARY_ROW = pytest.StashKey[dict]()


def seed_for_test(config: pytest.Config, nodeid: str) -> int:
    """Each test's seed derives from the run's seed and its node id, so xdist workers agree."""
    return derive_seed(run_settings(config).seed, nodeid)


def worker_id(config: pytest.Config) -> str:
    """The pytest-xdist worker running this process ("gw0", ...), or "main" without xdist."""
    return getattr(config, "workerinput", {}).get("workerid", "main")


def reports_root(config: pytest.Config) -> Path:
    return run_settings(config).reports


def report_folder(config: pytest.Config, nodeid: str) -> Path:
    """One folder per test id: xdist workers never share one."""
    return reports_root(config) / folder_name(nodeid)


def set_threads(config: pytest.Config) -> None:
    """Torch runs one intra-op thread in every test (--flopynet-threads N trains N clients at once on
    threads of their own instead: SequentialExecutor.workers), so metrics depend neither on -n nor on
    N: more intra-op threads would split float sums differently. It also lets xdist workers fill the cores."""
    import torch
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def make_scenario(config: pytest.Config, nodeid: str, scenario: ScenarioConfig, source: Path | None, **parts):
    """The Scenario runner for one test, wired to the run's settings and hooks."""
    set_threads(config)
    reason = session().unmet_requirements(scenario)
    if reason:
        pytest.skip(reason)
    return session().Scenario(scenario, settings=run_settings(config), test_id=nodeid, source=source,
                    reports_dir=report_folder(config, nodeid), on_event=config.hook.pytest_flopynet_event,
                    on_round_end=config.hook.pytest_flopynet_round_end, worker=worker_id(config), **parts)


def gates_for(config: pytest.Config, scenario: ScenarioConfig, markers=()) -> list:
    """Scenario file < @pytest.mark.gate < ini flopynet_gates < --flopynet-gate, per metric."""
    return run_settings(config).gates_for(scenario, tuple(g for m in markers for g in m.args))


def finish(item: pytest.Item, runner) -> None:
    """After a run: fail on a failed execution, record metrics for JUnit and the summary, check gates."""
    result = runner.result
    if result is None:
        return
    summary = result.analysis["execution_summary"]
    for key, value in summary.items():
        item.user_properties.append((f"flopynet.{key}", value))
    gates = gates_for(item.config, result.config, item.iter_markers("gate"))
    result.gate_outcomes = evaluate(gates, result.analysis)
    verdicts = [f"{o.gate}: actual {'not available' if o.actual is None else f'{o.actual:.6g}'}, "
                f"{'pass' if o.passed else 'fail'}" for o in result.gate_outcomes]
    for verdict in verdicts:  # one JUnit property per gate: expression, actual value, verdict
        item.user_properties.append(("flopynet.gate", verdict))
    if allure.enabled(item.config):
        allure.record(result, result.gate_outcomes)
    # the terminal summary's row: on the call phase's report (plugin.py), which xdist carries to its controller
    item.stash[SUMMARY_ROW] = {**headline(result.analysis), "gates_passed": sum(o.passed for o in result.gate_outcomes),
                               "gates": len(result.gate_outcomes),
                               "gate_results": [(str(o.gate), o.actual, o.passed) for o in result.gate_outcomes],
                               "events_never_fired": result.analysis["events_never_fired"],
                               "report": str(result.report_dir or "")}
    if result.execution.error_message:
        raise ScenarioFailed(f"scenario {result.config.name!r} {result.state}: {result.execution.error_message}")
    if not all(o.passed for o in result.gate_outcomes):
        raise GateFailed(f"scenario {result.config.name!r}: " + failure_message(result.gate_outcomes))


def write_falsifying(item: pytest.Item, config: ScenarioConfig) -> Path:
    """The scenario as it failed (its events, seed and gates) as a complete scenario file."""
    import dataclasses

    folder = report_folder(item.config, item.nodeid)
    config = dataclasses.replace(config, name=f"{config.name}_falsifying",
                                 description=f"{config.description} (falsifying schedule found by {item.nodeid})".strip())
    return save_scenario(config, folder / "falsifying.scenario.yaml")


class ScenarioFailed(AssertionError):
    pass


class GateFailed(AssertionError):
    pass
