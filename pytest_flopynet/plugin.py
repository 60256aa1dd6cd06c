"""pytest-flopynet's pytest hooks: options, ini keys, markers, scenario-file collection, gates,
the terminal summary. The work itself lives in the package's modules."""
from __future__ import annotations

from pathlib import Path

import pytest

from . import fuzzing, hookspecs
from .discovery import CLASS_FILE, FAMILIES, FOLDER_FILES, is_scenario_file, load_config, load_source, resolve_scenario
from .errors import FlopynetError, ScenarioValidationError, UnavailableError
from .settings import RunSettings, SettingError
from .terminal import SummaryReporter, install_live_progress
from .report import allure
from .testrun import (SUMMARY_ROW, Elsewhere, SeedRun, close_seed_engine, finish, make_scenario, other_seeds,
                      reports_root, run_settings, seeds_for, session, workers_elsewhere, write_falsifying)

pytest_plugins = ["pytest_flopynet.fixtures"]


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    RunSettings.add_pytest_options(parser)  # --flopynet-<name> and ini flopynet_<name>, from settings.OPTIONS


def pytest_unconfigure(config: pytest.Config) -> None:
    close_seed_engine(config)  # the processes (or Ray) that ran tests' other seeds


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name_or_path): the scenario the test's fixtures build and run")
    config.addinivalue_line("markers", "gate(*gates): gates 'metric op number' the scenario's results must pass")
    config.addinivalue_line("markers", "seeds(n): the test's scenario runs with n seeds (the test body sees the first); "
                                       "gates may take mean(metric), min(...), ci95_low(...) over them")
    config.addinivalue_line("markers", "flopynet: a collected scenario file")
    for family, text in FAMILIES.items():
        config.addinivalue_line("markers", f"{family}: {text}")
    config.addinivalue_line("markers", "ci_size: a scenario's CI-size variant (offline data, minutes)")
    config.addinivalue_line("markers", "full_size: a scenario at the original documentation's size")
    try:
        run_settings(config)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(SummaryReporter(config), "flopynet-summary")
    install_live_progress(config)
    if allure.enabled(config):
        config.pluginmanager.register(allure.AllureSteps(), "flopynet-allure")


def pytest_report_header(config: pytest.Config) -> str:
    run = run_settings(config)
    return (f"flopynet: seed={run.seed} backend={run.backend or 'sim'} executor={run.executor} "
            f"reports={reports_root(config)}")


def _add_tags(item: pytest.Item, tags) -> None:
    known = {line.split(":")[0].split("(")[0] for line in item.config.getini("markers")}
    for tag in tags:
        if tag not in known:
            item.config.addinivalue_line("markers", f"{tag}: scenario tag")
        item.add_marker(tag)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    """Never collect the resolved scenario files runs write: not in the reports folder, nor in any
    report folder (one holding an analysis.json) left by a run with another --flopynet-reports."""
    if collection_path == reports_root(config) or (collection_path / "analysis.json").is_file():
        return True
    return None


def pytest_collect_file(file_path: Path, parent):
    if is_scenario_file(file_path) or (file_path.name == CLASS_FILE and not any(
            (file_path.parent / f).is_file() for f in FOLDER_FILES)):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked @pytest.mark.scenario(...) also carries its scenario's tags as markers; a fuzzed
    scenario test gets the settings it needs (fuzzing.py), and no other test is touched."""
    fuzzing.apply_to_fuzzed_tests(items, bool(config.getoption("hypothesis_profile", None)))
    for item in items:
        marker = item.get_closest_marker("scenario")
        if marker is None or isinstance(item, ScenarioItem) or not marker.args:
            continue
        try:
            _add_tags(item, _load_cached(resolve_scenario(marker.args[0], [item.path.parent, config.rootpath])).tags)
        except FlopynetError:
            pass  # the scenario fixture reports it when the test runs
    if run_settings(config).size == "ci":
        skip = pytest.mark.skip(reason="full-size scenario: opt in with --flopynet-size full (ini flopynet_size)")
        for item in items:
            if item.get_closest_marker("full_size"):
                item.add_marker(skip)


_CACHE: dict[Path, object] = {}


def _load_cached(path: Path):
    if path not in _CACHE:
        _CACHE[path] = load_config(path)
    return _CACHE[path]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    try:
        result = yield
    except FlopynetError as exc:
        problem = exc
    else:
        problem = None
    # skipped or failed outside the except clause: one message, not pytest's chained second copy
    if isinstance(problem, UnavailableError):
        pytest.skip(str(problem))
    if problem is not None:
        pytest.fail(str(problem), pytrace=False)
    runner = getattr(item, "funcargs", {}).get("scenario")
    if runner is not None and not isinstance(item, ScenarioItem):
        finish(item, runner, other_seeds(item, runner))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A failing fuzzed test (xfailing too) leaves its last, shrunk schedule as a scenario file that
    replays the failure."""
    report = yield
    if report.when == "call" and SUMMARY_ROW in item.stash:  # a plain attribute: xdist serializes it
        report.flopynet = item.stash[SUMMARY_ROW]
    runs = getattr(item, "funcargs", {}).get("scenario_runs")
    raised = call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception)
    if report.when == "call" and raised and runs is not None and runs.last is not None:
        path = write_falsifying(item, runs.last[0])
        report.sections.append(("flopynet", f"falsifying schedule written to {path}; replay: flopynet run {path}"))
        item.user_properties.append(("flopynet.falsifying_schedule", str(path)))
        if allure.enabled(item.config):
            allure.attach_file(path)
    return report


class ScenarioFile(pytest.File):
    """A *.scenario.yaml / scenario.yaml file, or a folder's scenario.py: one test item per scenario
    that runs it (through its class's setup/run/teardown hooks) and checks its gates."""

    def collect(self):
        try:  # a file that cannot run is a collection error, before anything runs
            found = [(scenario, session().check_buildable(scenario.config, str(self.path), base_dir=self.path.parent))
                     for scenario in load_source(self.path)]
        except ScenarioValidationError as exc:  # every problem of the file at once
            raise self.CollectError(str(session().with_build_problems(exc, self.path.parent))) from None
        except FlopynetError as exc:
            raise self.CollectError(str(exc)) from None
        for scenario, topology in found:
            item = ScenarioItem.from_parent(self, name=scenario.config.name, scenario=scenario, topology=topology)
            item.add_marker("flopynet")
            _add_tags(item, scenario.config.tags)
            yield item


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario, topology, **kwargs):
        super().__init__(**kwargs)
        self.scenario = scenario  # a BaseScenario
        self.topology = topology  # built when the file was checked at collection

    def runtest(self) -> None:
        """The scenario once, or once per seed (seeds_for): the first here, the others at once in processes
        of their own where they may (workers_elsewhere), else one after another; gates judge them together."""
        seeds = seeds_for(self.config, self.nodeid, self.scenario.config, self.iter_markers("seeds")) or [None]
        workers = workers_elsewhere(self.config, alongside=True) if len(seeds) > 1 else None
        elsewhere = workers and Elsewhere(self.config, [SeedRun.of(self, seed, self.path, name=self.scenario.config.name)
                                                        for seed in seeds[1:]], workers)
        runners = []
        try:
            for seed in seeds[:1] if elsewhere else seeds:
                runners.append(make_scenario(self.config, self.nodeid, self.scenario.config, self.path, seed=seed,
                                             topology=self.topology, checked=True))
                self.scenario.execute_on(runners[-1])
            others = elsewhere.results() if elsewhere else []
        except UnavailableError as exc:
            pytest.skip(str(exc))
        finally:
            if elsewhere:
                elsewhere.wait()  # no process of this test outlives it
        finish(self, runners[0], [*(r.result for r in runners[1:]), *others])

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (AssertionError, FlopynetError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, 0, f"scenario {self.scenario.config.name}"
