"""Fixtures: topology, controller, fl_cluster, scenario (the runner), events and analyzer, and event fixtures."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from .discovery import load_config, resolve_scenario
from .errors import FlopynetError, UnavailableError
from .model import ScenarioConfig, ScenarioEvent
from .analysis.gates import evaluate, failure_message
from .testrun import GateFailed, gates_for, make_scenario, run_settings, seed_for_test, session


def event_fixture(*events: ScenarioEvent, params: list | None = None, ids=None):
    """A fixture that adds events to the test's scenario:

        partition = event_fixture(ScenarioEvent(...))
        latency = event_fixture(lambda ms: ScenarioEvent(..., parameters={"latency_increase_ms": ms}),
                                params=[10, 50, 100])   # one test per value

    With `params`, the single argument is a function of the parameter that returns the event(s)."""
    @pytest.fixture(params=params, ids=ids)
    def _event_fixture(request, scenario):
        made = events if params is None else events[0](request.param)
        made = (made,) if isinstance(made, ScenarioEvent) else tuple(made)
        for event in made:
            scenario.add_event(event)
        return made[0] if len(made) == 1 else made
    return _event_fixture


# -- fixtures ----------------------------------------------------------------------------

@pytest.fixture
def flopynet_seed(request) -> int:
    """This test's seed (derived from --flopynet-seed and the test id)."""
    return seed_for_test(request.config, request.node.nodeid)


@pytest.fixture
def scenario_source(request) -> Path | None:
    """The file of the scenario named by @pytest.mark.scenario(name_or_path)."""
    marker = request.node.get_closest_marker("scenario")
    if marker is None:
        return None
    try:
        return resolve_scenario(marker.args[0], [request.path.parent, request.config.rootpath])
    except FlopynetError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def scenario_config(scenario_source) -> ScenarioConfig:
    """The scenario under test; override this fixture to build one in Python."""
    if scenario_source is None:
        pytest.fail("no scenario chosen: mark the test with @pytest.mark.scenario(name_or_path) "
                    "or override the scenario_config fixture", pytrace=False)
    try:
        return load_config(scenario_source)
    except FlopynetError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def topology(scenario_config, scenario_source):
    try:
        return session().build_topology(scenario_config, base_dir=scenario_source.parent if scenario_source else None)
    except FlopynetError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def controller(topology, scenario_config):
    net = scenario_config.network_config
    return session().Controller(topology, net.controller_type, net.qos_enabled, net.traffic_prioritization)


@pytest.fixture
def fl_cluster(scenario_config, request):
    run = run_settings(request.config)
    try:
        return session().FLCluster(scenario_config, run.seed_for(scenario_config, request.node.nodeid), run.data_dir,
                         executor=run.executor, workers=run.threads or 1)
    except UnavailableError as exc:
        pytest.skip(str(exc))
    except FlopynetError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def scenario(request, scenario_config, scenario_source, topology, controller, fl_cluster):
    """The runner for the test's scenario: add events, register `@scenario.at(t)` callbacks, `run()`."""
    runner = make_scenario(request.config, request.node.nodeid, scenario_config, scenario_source,
                           topology=topology, controller=controller, cluster=fl_cluster)
    runner.raise_on_failure = True
    runner.plot_gates = gates_for(request.config, scenario_config, request.node.iter_markers("gate"))
    return runner


@pytest.fixture
def events(scenario) -> list[ScenarioEvent]:
    """The events the test's scenario runs: the file's, then those event fixtures added. A live list:
    what a test appends before `scenario.run()` runs too (`result.events` is what fired, and when)."""
    return scenario.events


@pytest.fixture
def analyzer():
    """`analyze_scenario(result, custom_analysis=())`: a run's results structure, with analyses beyond
    those its analysis_config names, without running it again."""
    return session().analyze_scenario


class ScenarioRuns:
    """Runs the test's scenario afresh on every call, with extra events, and checks its gates: what
    a Hypothesis test calls once per drawn schedule. Nothing is shared between calls, so examples
    cannot leak into each other; the last call is kept so a failing, shrunk schedule can be written
    out as a replayable scenario file."""

    def __init__(self, request, config: ScenarioConfig, source: Path | None):
        self.request, self.config, self.source = request, config, source
        self.last = None  # (the resolved config with seed and gates, the result)

    def __call__(self, events=(), *, check_gates: bool = True):
        item = self.request.node
        config = dataclasses.replace(self.config, events=[*self.config.events, *events])
        runner = make_scenario(item.config, item.nodeid, config, self.source)
        runner.reports_dir = None  # only a falsifying schedule is written, by the plugin
        runner.raise_on_failure = True
        gates = gates_for(item.config, config, item.iter_markers("gate"))
        self.last = None
        try:
            result = runner.run()
        finally:  # the run as it ran (events, seed), with the gates it is judged by
            if runner.result is not None:
                self.last = (dataclasses.replace(runner.result.config, gates=[str(g) for g in gates]), runner.result)
        outcomes = evaluate(gates, result.analysis)
        if check_gates and not all(o.passed for o in outcomes):
            raise GateFailed(f"scenario {config.name!r} with {len(events)} drawn events: " + failure_message(outcomes))
        return result


@pytest.fixture
def scenario_runs(request, scenario_config, scenario_source) -> ScenarioRuns:
    """Call it with a list of events to run the scenario with them (see ScenarioRuns)."""
    return ScenarioRuns(request, scenario_config, scenario_source)
