"""How a pytest test runs a scenario: its seed, report folder, requirements, gates and the metrics
it records for JUnit and the terminal summary. Shared by the fixtures and the collected scenario files."""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .analysis.compare import headline
from .analysis.gates import evaluate, failure_message
from .analysis.spread import across_seeds
from .discovery import load_source
from .errors import FlopynetError, UnavailableError
from .model import ScenarioConfig, save_scenario
from .parallel import Processes, Ray
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


def seed_settings(config: pytest.Config, nodeid: str, seed: int | None) -> tuple[RunSettings, Path | None]:
    """The settings and report folder of one of a test's seeds (seeds_for: seed_<s>/ in the test's
    folder), or of its one run (seed None)."""
    settings, folder = run_settings(config), report_folder(config, nodeid)
    if seed is None:
        return settings, folder
    return settings.but(seed=seed, seed_overrides_file=True), folder / f"seed_{seed}"


def make_scenario(config: pytest.Config, nodeid: str, scenario: ScenarioConfig, source: Path | None,
                  seed: int | None = None, **parts):
    """The Scenario runner for one test, wired to the run's settings and hooks; `seed`: one of the test's
    seeds (seeds_for), its reports in a folder of its own."""
    set_threads(config)
    reason = session().unmet_requirements(scenario)
    if reason:
        pytest.skip(reason)
    settings, folder = seed_settings(config, nodeid, seed)
    return session().Scenario(scenario, settings=settings, test_id=nodeid, source=source, reports_dir=folder,
                    on_event=config.hook.pytest_flopynet_event, on_round_end=config.hook.pytest_flopynet_round_end,
                    worker=worker_id(config), **parts)


def seeds_for(config: pytest.Config, nodeid: str, scenario: ScenarioConfig, markers=()) -> list[int] | None:
    """The seeds a test runs its scenario with: the test's seed and the next ones, as many as
    --flopynet-seeds, @pytest.mark.seeds(N) or the scenario's `seeds` say; None for one (as always)."""
    marked = [m.args[0] if m.args else None for m in markers]
    if marked and not (isinstance(marked[0], int) and not isinstance(marked[0], bool) and marked[0] >= 1):
        raise pytest.UsageError(f"{nodeid}: @pytest.mark.seeds takes a whole number of 1 or more, not {marked[0]!r}")
    n = run_settings(config).seeds_for(scenario, marked[0] if marked else None)
    if n == 1:
        return None
    base = run_settings(config).seed_for(scenario, nodeid)
    return [base + i for i in range(n)]


def gates_for(config: pytest.Config, scenario: ScenarioConfig, markers=()) -> list:
    """Scenario file < @pytest.mark.gate < ini flopynet_gates < --flopynet-gate, per metric."""
    return run_settings(config).gates_for(scenario, tuple(g for m in markers for g in m.args))


def seed_workers(config: pytest.Config) -> int | str:
    """How many of a test's seeds run at once (--flopynet-seeds-workers): its count, "ray", or for auto
    the cores this process may use, shared among the xdist workers."""
    chosen = run_settings(config).seeds_workers
    if chosen != "auto":
        return chosen
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))


def workers_elsewhere(config: pytest.Config, alongside: bool) -> int | str | None:
    """Processes (or "ray") for a test's other seeds, `alongside` a run in the test's process; None to run
    them in the test's process, one after another: one worker is all there is, or a conftest or plugin
    implements pytest_flopynet_event / _round_end (Allure's steps aside) and must see every run."""
    impls = [*config.hook.pytest_flopynet_event.get_hookimpls(), *config.hook.pytest_flopynet_round_end.get_hookimpls()]
    if any(not isinstance(impl.plugin, allure.AllureSteps) for impl in impls):
        return None
    workers = seed_workers(config)
    if workers == "ray":
        return workers
    workers -= 1 if alongside else 0
    return workers if workers > 1 or (alongside and workers == 1) else None


@dataclass
class SeedRun:
    """One of a test's other seeds, for another process (picklable): a collected scenario is read again
    from its file, by name (its class's hooks run there too); a fixture test's scenario travels with the
    events its body added."""

    settings: RunSettings
    test_id: str
    folder: Path | None
    worker: str
    source: Path | None
    name: str | None = None  # a collected scenario's name in `source`
    config: ScenarioConfig | None = None  # or a fixture test's scenario, its events and run options
    events: list = field(default_factory=list)
    raise_on_failure: bool = False
    plot_gates: list | None = None

    @classmethod
    def of(cls, item: pytest.Item, seed: int, source: Path | None, **what) -> SeedRun:
        settings, folder = seed_settings(item.config, item.nodeid, seed)
        return cls(settings, item.nodeid, folder, worker_id(item.config), source, **what)


def run_seed(run: SeedRun):
    """A SeedRun, in a worker process; its ScenarioResult. Errors come back as the plain classes the
    test's process turns into one line."""
    import torch

    torch.set_num_threads(1)
    Scenario = session().Scenario
    try:
        scenario = next(s for s in load_source(run.source) if s.config.name == run.name) if run.name else None
        runner = Scenario(scenario.config if scenario else run.config, settings=run.settings, test_id=run.test_id,
                          source=run.source, reports_dir=run.folder, worker=run.worker)
        if scenario is not None:
            scenario.execute_on(runner)
        else:
            runner.events, runner.raise_on_failure, runner.plot_gates = list(run.events), run.raise_on_failure, run.plot_gates
            runner.run()
    except UnavailableError as exc:
        raise UnavailableError(str(exc)) from None
    except FlopynetError as exc:
        raise FlopynetError(str(exc)) from None
    return runner.result


ENGINE = pytest.StashKey[object]()


def seed_engine(config: pytest.Config, workers: int | str):
    """The session's processes (or Ray) for other seeds, started on first use and kept for the session's
    later tests (a spawned process pays for importing torch once); close_seed_engine stops them."""
    if ENGINE not in config.stash:
        config.stash[ENGINE] = Ray(needs="--flopynet-seeds-workers ray") if workers == "ray" else Processes(workers)
    return config.stash[ENGINE]


def close_seed_engine(config: pytest.Config) -> None:
    engine = config.stash.get(ENGINE, None)
    if engine is not None:
        del config.stash[ENGINE]
        engine.close()


class Elsewhere:
    """SeedRuns started at once on the session's seed engine from a thread of the test's process, which
    meanwhile may run a seed itself; results() waits for them and gives them in seed order."""

    def __init__(self, config: pytest.Config, runs: list[SeedRun], workers: int | str):
        engine = seed_engine(config, workers)
        self._results, self._failure = [], []

        def gather():
            try:
                self._results += engine.run(run_seed, runs)
            except BaseException as exc:  # raised in the test's thread by results()
                self._failure.append(exc)
        self._thread = threading.Thread(target=gather, name="flopynet seeds", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def results(self) -> list:
        """Their ScenarioResults, in seed order."""
        self.wait()
        if self._failure:
            raise self._failure[0]
        return sorted(self._results, key=lambda r: r.execution.seed)


def other_seeds(item: pytest.Item, runner) -> list:
    """The results of a fixture test's scenario run again for the test's other seeds (seeds_for), with the events and
    callbacks the test gave its runner: the test body saw the first seed, the gates judge them all. At once
    in other processes where they may (workers_elsewhere) and the body added no callbacks (code stays here)."""
    seeds = seeds_for(item.config, item.nodeid, runner.config, item.iter_markers("seeds"))
    if not seeds or runner.result is None:
        return []
    workers = None if runner.callbacks else workers_elsewhere(item.config, alongside=False)
    if workers:
        runs = [SeedRun.of(item, seed, runner.source, config=runner.config, events=list(runner.events),
                           raise_on_failure=runner.raise_on_failure, plot_gates=runner.plot_gates) for seed in seeds[1:]]
        return Elsewhere(item.config, runs, workers).results()
    results = []
    for seed in seeds[1:]:
        other = make_scenario(item.config, item.nodeid, runner.config, runner.source, seed=seed)
        other.events, other.callbacks = list(runner.events), list(runner.callbacks)
        other.raise_on_failure, other.plot_gates = runner.raise_on_failure, runner.plot_gates
        results.append(other.run())
    return results


def finish(item: pytest.Item, runner, more: list | None = None) -> None:
    """After a run (and with `more`, the results of the test's other seeds): fail on a failed execution,
    record metrics for JUnit and the summary, check gates over every seed."""
    result = runner.result
    if result is None:
        return
    results = [result, *(r for r in more or () if r is not None)]
    analyses = [r.analysis for r in results]
    summary = result.analysis["execution_summary"]
    for key, value in summary.items():
        item.user_properties.append((f"flopynet.{key}", value))
    gates = gates_for(item.config, result.config, item.iter_markers("gate"))
    outcomes = evaluate(gates, result.analysis, analyses)
    for r in results:
        r.gate_outcomes = outcomes
    verdicts = [f"{o.gate}: actual {'not available' if o.actual is None else f'{o.actual:.6g}'}, "
                f"{'pass' if o.passed else 'fail'}" for o in outcomes]
    for verdict in verdicts:  # one JUnit property per gate: expression, actual value, verdict
        item.user_properties.append(("flopynet.gate", verdict))
    spread = None
    if len(results) > 1:
        spread = write_seeds(report_folder(item.config, item.nodeid), analyses, outcomes, gates)
        item.user_properties.append(("flopynet.seeds", ",".join(str(a.get("seed")) for a in analyses)))
    if allure.enabled(item.config):
        allure.record(result, outcomes)  # the first seed's run, then what all the seeds gave
        for name in ("seeds.json", "seeds.png") if spread else ():
            allure.attach_file(report_folder(item.config, item.nodeid) / name)
    # the terminal summary's row: on the call phase's report (plugin.py), which xdist carries to its controller
    item.stash[SUMMARY_ROW] = {**headline(result.analysis), "gates_passed": sum(o.passed for o in outcomes),
                               "gates": len(outcomes),
                               "gate_results": [(str(o.gate), o.actual, o.passed) for o in outcomes],
                               "events_never_fired": result.analysis["events_never_fired"],
                               "report": str(result.report_dir or ""),
                               "seeds": [a.get("seed") for a in analyses] if spread else None,
                               "final_accuracy_spread": spread["final_accuracy"] if spread else None}
    for r in results:
        if r.execution.error_message:
            raise ScenarioFailed(f"scenario {r.config.name!r} (seed {r.execution.seed}) {r.state}: "
                                 f"{r.execution.error_message}")
    if not all(o.passed for o in outcomes):
        seeds = f" over seeds {', '.join(str(a.get('seed')) for a in analyses)}" if spread else ""
        raise GateFailed(f"scenario {result.config.name!r}{seeds}: " + failure_message(outcomes))


def write_seeds(folder: Path, analyses: list[dict], outcomes, gates) -> dict:
    """seeds.json (every seed's summary, the spread of each summary metric, the gates' verdicts) and
    seeds.png (accuracy per round over the seeds) in the test's report folder; the spread."""
    from .report.plots import plot_seeds  # matplotlib: only for a test that runs several seeds

    spread = across_seeds(analyses)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "seeds.json").write_text(json.dumps({
            "seeds": [a.get("seed") for a in analyses],
            "runs": [{"seed": a.get("seed"), **a["execution_summary"]} for a in analyses],
            "spread": spread,
            "gates": [{"gate": str(o.gate), "actual": o.actual, "passed": o.passed} for o in outcomes],
        }, indent=2, default=str) + "\n")
        plot_seeds(analyses, folder / "seeds.png", gates)
    return spread


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
