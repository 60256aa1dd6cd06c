"""The Python API of the original documentation: BaseScenario (base_scenario.py, re-exported here) and
the awaitable ScenarioRunner.

    runner = ScenarioRunner()
    scenario_id = await runner.run_scenario("basic_fl_training_ci")
    status = await runner.get_scenario_status(scenario_id)
    results = await runner.get_scenario_results(scenario_id)

Runs go to a worker thread, so the event loop stays free to read status, pause, resume or cancel."""
from __future__ import annotations

import asyncio
import itertools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from .analysis.compare import compare_scenarios
from .base_scenario import BaseScenario
from .discovery import find_scenario
from .errors import FlopynetError
from .model import ScenarioConfig, ScenarioState, check, save_scenario
from .report.exports import folder_name
from .session import Scenario
from .settings import RunSettings


class _Run:
    def __init__(self, scenario_id: str, scenario, engine, future: Future):
        self.scenario_id, self.scenario, self.engine, self.future = scenario_id, scenario, engine, future


class ScenarioRunner:
    """Runs scenarios by name, file or config in worker threads and answers for them by id.

    search: folders whose scenarios/ hold named scenarios (default: the current folder);
    reports: where each run's folder goes (None: write nothing); seed, backend, data_dir, executor:
    as for `flopynet run`; size "ci" (default: $FLOPYNET_SCENARIO_SIZE, else full) makes built-in names mean
    their CI-size variants; status_callbacks: called with the execution on every state change."""

    def __init__(self, search: list[Path] | None = None, *, reports: Path | str | None = "reports", seed: int = 0,
                 backend: str | None = None, data_dir: Path | None = None,
                 size: str | None = None, status_callbacks: list[Callable] | None = None, max_parallel: int = 1,
                 executor: str = "auto"):
        self.search = [Path(p) for p in (search or [Path.cwd()])]
        self.reports = Path(reports) if reports else None
        self.settings = RunSettings(seed=seed, backend=backend, reports=self.reports, data_dir=data_dir,
                                    executor=executor)
        self.size = size
        self.status_callbacks = list(status_callbacks or [])
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="flopynet")
        self._runs: dict[str, _Run] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- starting runs --------------------------------------------------------------------
    async def run_scenario(self, name: str | Path) -> str:
        """Start a scenario (a built-in name, a scenario's name, or a file) and return its id."""
        return self._start(find_scenario(name, self.search, self.size))

    async def run_scenario_from_config(self, config: ScenarioConfig) -> str:
        check(config, f"<{config.name}>")  # the data now; registries and topology where the run is built
        return self._start(BaseScenario(config))

    async def run_batch(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Run several scenarios (one after another unless max_parallel > 1); results by name."""
        ids = {name: await self.run_scenario(name) for name in names}
        return {name: await self.get_scenario_results(sid) for name, sid in ids.items()}

    def _start(self, scenario: BaseScenario) -> str:
        with self._lock:
            scenario_id = f"{scenario.config.name}-{next(self._ids)}"
        engine = Scenario(scenario.config, settings=self.settings, source=scenario.source,
                          reports_dir=self.reports / folder_name(scenario_id) if self.reports else None)
        engine.status_callbacks.extend(self.status_callbacks)
        future = self._pool.submit(scenario.execute_on, engine)
        self._runs[scenario_id] = _Run(scenario_id, scenario, engine, future)
        return scenario_id

    # -- asking about them ----------------------------------------------------------------
    def _run(self, scenario_id: str) -> _Run:
        try:
            return self._runs[scenario_id]
        except KeyError:
            raise FlopynetError(f"no scenario run {scenario_id!r} (known: {', '.join(self._runs) or 'none'})") from None

    async def get_scenario_status(self, scenario_id: str) -> dict[str, Any]:
        """state, current_round, total_rounds, scenario_time_seconds, events_triggered, error_message."""
        run = self._run(scenario_id)
        orchestrator = run.engine.orchestrator
        execution = orchestrator.execution if orchestrator else None
        state = execution.state if execution else ScenarioState.PENDING
        if run.future.done() and run.future.exception() is not None and execution is None:
            state = ScenarioState.FAILED
        return {"scenario_id": scenario_id, "scenario_name": run.scenario.config.name, "state": str(state),
                "current_round": execution.current_round if execution else 0,
                "total_rounds": run.scenario.config.fl_config.total_rounds,
                "scenario_time_seconds": orchestrator.clock.now() if orchestrator else 0.0,
                "events_triggered": len(execution.events_triggered) if execution else 0,
                "error_message": (execution.error_message if execution else None)
                or (str(run.future.exception()) if run.future.done() and run.future.exception() else None)}

    async def wait(self, scenario_id: str):
        """The ScenarioResult once the run has ended (raises what the run raised)."""
        return await asyncio.wrap_future(self._run(scenario_id).future)

    async def get_scenario_results(self, scenario_id: str) -> dict[str, Any]:
        """The results structure, once the run has ended (waits for it)."""
        return (await self.wait(scenario_id)).analysis

    # -- control --------------------------------------------------------------------------
    async def cancel_scenario(self, scenario_id: str) -> None:
        self._run(scenario_id).engine.cancel()

    async def pause_scenario(self, scenario_id: str) -> None:
        self._run(scenario_id).engine.pause()

    async def resume_scenario(self, scenario_id: str) -> None:
        self._run(scenario_id).engine.resume()

    # -- files and comparison -------------------------------------------------------------
    async def save_scenario_config(self, config: ScenarioConfig, path: str | Path) -> Path:
        """YAML or JSON by the file's suffix."""
        save_scenario(config, path)
        return Path(path)

    def compare_scenarios(self, results: dict[str, Any]) -> dict[str, Any]:
        return compare_scenarios(results)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
