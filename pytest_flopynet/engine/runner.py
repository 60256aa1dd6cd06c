"""Run one scenario end to end: build the parts, orchestrate, analyse, write reports.

`Scenario` is the object the `scenario` fixture gives a test: add events, register timed callbacks,
then `run()`.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Callable

from ..analysis.analyzer import analyze_scenario
from ..analysis.result import ScenarioResult
from ..controller import Controller
from ..fl.cluster import FLCluster
from ..errors import FlopynetError, UnavailableError
from ..model import ScenarioConfig, ScenarioEvent, check
from ..network import build_topology, make_backend, make_clock
from ..network.topology import Topology
from ..report.exports import write_reports
from .orchestrator import Orchestrator, ScenarioExecution, StatusCallback, TimedCallback


def unmet_requirements(scenario: ScenarioConfig) -> str | None:
    """Why this machine cannot run the scenario (its ResourceRequirements), or None."""
    req = scenario.requirements
    cores = os.cpu_count() or 1
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if req.min_cpu_cores > cores:
        return f"scenario {scenario.name!r} needs {req.min_cpu_cores} CPU cores, this machine has {cores}"
    if req.min_memory_gb > memory_gb:
        return f"scenario {scenario.name!r} needs {req.min_memory_gb:g} GiB of memory, this machine has {memory_gb:.1f}"
    return None


class ScenarioRunError(FlopynetError):
    """The run stopped in the failed state; the message says why."""


class Scenario:
    def __init__(self, config: ScenarioConfig, *, seed: int = 0, backend: str | None = None,
                 source: Path | None = None, reports_dir: Path | None = None, data_dir: Path | None = None,
                 topology: Topology | None = None, controller: Controller | None = None,
                 cluster: FLCluster | None = None, on_event: Callable | None = None,
                 on_round_end: Callable | None = None, worker: str = "main",
                 backend_options: dict | None = None, executor: str = "auto"):
        self.config = config
        self.seed = config.seed if config.seed is not None else seed
        self.backend = backend or config.backend or "sim"
        self.source = source
        self.reports_dir = reports_dir
        self.data_dir = data_dir
        self.executor = executor  # how clients train (fl.EXECUTORS); the same metrics within float rounding
        self._topology, self._controller, self._cluster = topology, controller, cluster
        self.events: list[ScenarioEvent] = list(config.events)  # the file's, then those added (add_event)
        self.callbacks: list[TimedCallback] = []
        self.status_callbacks: list[StatusCallback] = []
        self.on_event, self.on_round_end = on_event, on_round_end
        self.worker = worker  # the xdist worker running it: names machine resources of real backends
        self.backend_options = dict(backend_options or {})  # time_scale, gns3_url, ...: each backend reads its own
        self.raise_on_failure = False  # the pytest fixture sets it: a failed run fails the test
        self.orchestrator: Orchestrator | None = None
        self.result: ScenarioResult | None = None
        self._pending: list[str] = []  # cancel/pause/resume asked before the orchestrator exists
        self._control = threading.Lock()

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            self._topology = build_topology(self.config, base_dir=self.source.parent if self.source else None)
        return self._topology

    @property
    def controller(self) -> Controller:
        if self._controller is None:
            net = self.config.network_config
            self._controller = Controller(self.topology, net.controller_type, net.qos_enabled,
                                          net.traffic_prioritization)
        return self._controller

    @property
    def cluster(self) -> FLCluster:
        if self._cluster is None:
            self._cluster = FLCluster(self.config, self.seed, self.data_dir, executor=self.executor)
        return self._cluster

    def add_event(self, event: ScenarioEvent) -> ScenarioEvent:
        self.events.append(event)
        return event

    def at(self, time: float, duration: float | None = None):
        """Decorator: call fn(execution) at scenario time `time`; a callable it returns runs at time + duration."""
        def deco(fn):
            self.callbacks.append(TimedCallback(float(time), fn, duration))
            return fn
        return deco

    def _control_run(self, action: str) -> None:
        with self._control:
            if self.orchestrator is None:
                self._pending.append(action)
            else:
                getattr(self.orchestrator, action)()

    def cancel(self) -> None:
        """Stop at the next scenario step; the run ends cancelled with what it collected."""
        self._control_run("cancel")

    def pause(self) -> None:
        self._control_run("pause")

    def resume(self) -> None:
        self._control_run("resume")

    def resolved_config(self) -> ScenarioConfig:
        """The scenario as it runs: its events plus those added by fixtures, and the seed used."""
        config = dataclasses.replace(self.config, events=list(self.events), seed=self.seed)
        check(config, str(self.source or "<scenario>"), self.source.parent if self.source else None, warn=False)
        return config

    def run(self) -> ScenarioResult:
        """Run once; raises UnavailableError when the machine lacks the scenario's requirements."""
        config = self.resolved_config()
        reason = unmet_requirements(config)
        if reason:
            raise UnavailableError(reason)
        clock = make_clock(self.backend, self.backend_options)
        backend = make_backend(self.backend, clock, self.controller, worker=self.worker,
                               options={"label": config.name, **self.backend_options})
        reason = getattr(backend, "unsupported", lambda events: None)(config.events)
        if reason:
            raise UnavailableError(reason)
        backend.build(self.topology)
        execution = ScenarioExecution(f"{config.name}-{self.seed}", config, self.seed, backend=self.backend)
        orchestrator = Orchestrator(execution, clock=clock, backend=backend, topology=self.topology,
                                    cluster=self.cluster, controller=self.controller, callbacks=self.callbacks,
                                    status_callbacks=self.status_callbacks, on_event=self.on_event,
                                    on_round_end=self.on_round_end)
        with self._control:
            self.orchestrator = orchestrator
            for action in self._pending:
                getattr(orchestrator, action)()
        clock.start()  # scenario time 0: the network is built
        self.orchestrator.run()
        self.result = ScenarioResult(config, execution, analyze_scenario(execution))
        if self.reports_dir is not None:
            write_reports(self.result, self.reports_dir)
        if self.raise_on_failure and execution.error_message:
            raise ScenarioRunError(f"scenario {config.name!r} {execution.state}: {execution.error_message}")
        return self.result


def run_scenario(config: ScenarioConfig, **options) -> ScenarioResult:
    """Run a scenario once (see Scenario for the options)."""
    return Scenario(config, **options).run()
