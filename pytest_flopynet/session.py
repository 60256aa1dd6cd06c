"""The session layer: settings -> build (topology, controller, cluster) -> orchestrate -> the run's
record -> analyse -> report. pytest's fixtures and scenario items, the `flopynet` command and the
ScenarioRunner all run scenarios through `Scenario` here; the engine below it only orchestrates and
produces the record (engine.orchestrator.ScenarioExecution), and never analyses or writes reports.

`Scenario` is the object the `scenario` fixture gives a test: add events, register timed callbacks,
then `run()`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Callable

from .analysis.analyzer import analyze_scenario
from .analysis.result import ScenarioResult
from .checks import check_buildable, with_build_problems  # noqa: F401 (for the plugin)
from .controller import Controller
from .engine.clock import clock_for
from .engine.orchestrator import Orchestrator, ScenarioExecution, StatusCallback, TimedCallback
from .errors import FlopynetError, UnavailableError
from .fl.cluster import FLCluster
from .fl.nodes import NODE_PORT, NodeProcesses, nodes_unsupported
from .model import ScenarioConfig, ScenarioEvent, ScenarioState, ScenarioWarning, event_spec
from .netmodel import Topology
from .network import make_backend
from .network.topology import build_topology
from .report.exports import write_reports
from .settings import RunSettings

log = logging.getLogger("pytest_flopynet")  # a line per round and per event edge (INFO): --log-cli-level=INFO shows them


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


def unsupported_events(backend, events: list[ScenarioEvent]) -> str | None:
    """Why the backend cannot run here at all, or cannot play one of these events (the network
    conditions its spec needs), or None."""
    reason = backend.unsupported(frozenset())  # the backend itself (missing tools)
    if reason:
        return reason
    for event in events:
        reason = backend.unsupported(frozenset(event_spec(event.event_type).needs))
        if reason:
            return f"{event.event_type} at {event.trigger_time:g} s: {reason}"
    return None


class ScenarioRunError(FlopynetError):
    """The run stopped in the failed state; the message says why."""


class Scenario:
    """One scenario run. `settings` (RunSettings) say how it runs; the keyword arguments seed, backend,
    reports_dir, data_dir, executor and backend_options override single settings (seed: the run's
    seed, which the scenario file's own seed beats, as everywhere). `checked`: the config was checked
    already (checks.check_buildable) against the given topology, as pytest does at collection."""

    def __init__(self, config: ScenarioConfig, *, settings: RunSettings | None = None, seed: int | None = None,
                 backend: str | None = None, source: Path | None = None, reports_dir: Path | None = None,
                 data_dir: Path | None = None, topology: Topology | None = None,
                 controller: Controller | None = None, cluster: FLCluster | None = None,
                 on_event: Callable | None = None, on_round_end: Callable | None = None, worker: str = "main",
                 backend_options: dict | None = None, executor: str | None = None, test_id: str | None = None,
                 checked: bool = False):
        settings = settings or RunSettings(reports=None)
        if seed is not None:
            settings = settings.but(seed=seed)
        self.config = config
        self.settings = settings
        self.seed = settings.seed_for(config, test_id)
        self.backend = backend or settings.backend_for(config)
        self.source = source
        self.reports_dir = reports_dir
        self.data_dir = data_dir if data_dir is not None else settings.data_dir
        self.executor = executor or settings.executor  # how clients train (fl.EXECUTORS); same metrics within rounding
        if self.backend == "gns3":  # FL crosses GNS3 links only as the node program inside its nodes
            self.executor = "nodes"
        self._topology, self._controller, self._cluster = topology, controller, cluster
        self._checked = checked  # config and its own events already checked against this topology (at collection)
        self.events: list[ScenarioEvent] = list(config.events)  # the file's, then those added (add_event)
        self.callbacks: list[TimedCallback] = []
        self.status_callbacks: list[StatusCallback] = []
        self.on_event, self.on_round_end = on_event, on_round_end
        self.worker = worker  # the xdist worker running it: names machine resources of real backends
        self.backend_options = {**settings.backend_options(config), **(backend_options or {})}
        self.raise_on_failure = False  # the pytest fixture sets it: a failed run fails the test
        self.plot_gates: list | None = None  # the gates drawn on the plots (None: the file's and the run's)
        self.orchestrator: Orchestrator | None = None
        self.result: ScenarioResult | None = None
        self._pending: list[str] = []  # cancel/pause/resume asked before the orchestrator exists
        self._control = threading.Lock()

    @property
    def base_dir(self) -> Path | None:
        return self.source.parent if self.source else None

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            self._topology = build_topology(self.config, base_dir=self.base_dir)
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
            executor = "sequential" if self.executor == "nodes" else self.executor  # nodes: selection and state here
            self._cluster = FLCluster(self.config, self.seed, self.data_dir, executor=executor,
                                      workers=self.settings.threads or 1)
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
        """The scenario as it runs: its events plus those added by fixtures, and the seed used; checked
        once, against the registries and the topology the run uses (built here if not yet)."""
        config = dataclasses.replace(self.config, events=list(self.events), seed=self.seed)
        if not (self._checked and self.events == self.config.events):  # added events: checked with the rest
            check_buildable(config, str(self.source or "<scenario>"), self.topology)
        return config

    def run(self) -> ScenarioResult:
        """Run once; raises UnavailableError when the machine lacks the scenario's requirements."""
        config = self.resolved_config()
        reason = unmet_requirements(config)
        if reason:
            raise UnavailableError(reason)
        clock = clock_for(self.backend, self.backend_options.get("time_scale"))
        in_nodes = self.executor == "nodes"  # FL in processes of its own (fl/nodes.py)
        options = {**self.backend_options, **({"node_port": NODE_PORT} if in_nodes else {})}
        backend = make_backend(self.backend, clock, self.controller, worker=self.worker, options=options)
        reason = unsupported_events(backend, config.events) or (nodes_unsupported(backend, config) if in_nodes else None)
        if reason:
            raise UnavailableError(reason)
        backend.build(self.topology)
        nodes = None
        if in_nodes:  # their logs and state files beside the reports (else in a temporary folder)
            nodes = NodeProcesses(backend, config, self.seed, self.data_dir,
                                  self.reports_dir / "nodes" if self.reports_dir is not None else None)
        execution = ScenarioExecution(f"{config.name}-{self.seed}", config, self.seed, backend=self.backend)
        orchestrator = Orchestrator(execution, clock=clock, backend=backend, topology=self.topology,
                                    cluster=self.cluster, controller=self.controller, callbacks=self.callbacks,
                                    status_callbacks=self.status_callbacks, on_event=self._log_event,
                                    on_round_end=self._log_round, nodes=nodes)
        with self._control:
            self.orchestrator = orchestrator
            for action in self._pending:
                getattr(orchestrator, action)()
        clock.start()  # scenario time 0: the network is built
        self.orchestrator.run()
        self.result = ScenarioResult(config, execution, analyze_scenario(execution))
        never = self.result.analysis["events_never_fired"]
        if never and execution.state == ScenarioState.COMPLETED:
            end = self.result.analysis["execution_summary"]["total_duration_seconds"]
            warnings.warn_explicit(f"{config.name}: {never_fired_text(never)} (all rounds were done at scenario "
                                   f"{end:.1f} s)", ScenarioWarning, filename=str(self.source or config.name), lineno=0,
                                   module="pytest_flopynet.session")
        if self.reports_dir is not None:
            gates = self.plot_gates if self.plot_gates is not None else self.settings.gates_for(config)
            write_reports(self.result, self.reports_dir, x_axis=self.settings.plot_axis, gates=gates)
        if self.raise_on_failure and execution.error_message:
            raise ScenarioRunError(f"scenario {config.name!r} {execution.state}: {execution.error_message}")
        return self.result


    def _log_round(self, round, metrics, execution) -> None:
        fl = execution.config.fl_config
        log.info("%s: round %d/%d  scenario %.1f s  accuracy %.4f  loss %.4f  %d clients%s", execution.config.name,
                 round, fl.total_rounds, metrics.end_time, metrics.accuracy, metrics.loss, len(metrics.participants),
                 f", {len(metrics.stragglers)} late or lost" if metrics.stragglers else "", extra={"kind": "round"})
        if self.on_round_end is not None:
            self.on_round_end(round=round, metrics=metrics, execution=execution)

    def _log_event(self, event, phase, execution) -> None:
        log.info("%s: %s %s on %s at scenario %.1f s", execution.config.name, event.event_type,
                 "starts" if phase == "start" else "ends", event.target, self.orchestrator.clock.now(),
                 extra={"kind": "event"})
        if self.on_event is not None:
            self.on_event(event=event, phase=phase, execution=execution)


def never_fired_text(never: list[dict]) -> str:
    """'2 events never fired: link_failure on s1-s2 at 300 s, ...'"""
    listed = ", ".join(f"{e['event_type']} on {e['target']} at {e['trigger_time']:g} s" for e in never)
    return f"{len(never)} event{'s' if len(never) > 1 else ''} never fired: {listed}"


def run_scenario(config: ScenarioConfig, **options) -> ScenarioResult:
    """Run a scenario once (see Scenario for the options)."""
    return Scenario(config, **options).run()
