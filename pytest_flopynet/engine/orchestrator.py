"""The orchestrator: builds nothing itself, wires the parts and runs rounds in scenario time.

A round: select clients among the available and reachable ones; download the model along routed
paths; local training (compute time from the device profile); upload; aggregate; evaluate. Events
and monitor samples fire from the scheduler at their exact times, including mid-transfer. Besides
the monitor's period, the network is sampled at every round's start and end and just after every
event starts or ends, so a short run's samples still show its events.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..collector import LINK_GROUPS, LINK_METRICS, Collector, EventRecord, RoundRecord, group_metric
from ..errors import FlopynetError, UnavailableError
from ..controller import Controller
from ..fl.cluster import FLCluster
from ..model import (EventType, ScenarioConfig, ScenarioEvent, ScenarioState, by_client_number, client_number,
                     event_clients, event_duration, rule_spec)
from ..netmodel import Flow, Topology
from ..network.backend import Backend
from ..policy import PolicyEngine
from .clock import Clock
from .events import HANDLERS, EventContext, not_yet_joined

StatusCallback = Callable[["ScenarioExecution"], None]


@dataclass
class ScenarioExecution:
    """The state of one run; keeps its metrics and error when the run fails."""

    scenario_id: str
    config: ScenarioConfig
    seed: int
    state: ScenarioState = ScenarioState.PENDING
    start_time: float | None = None
    end_time: float | None = None
    current_round: int = 0
    events_triggered: list[str] = field(default_factory=list)
    metrics: Collector = field(default_factory=Collector)
    error_message: str | None = None
    backend: str = "sim"
    policy_metrics: dict[str, Any] = field(default_factory=dict)  # the policy engine's, when the run ended


@dataclass
class TimedCallback:
    """`@scenario.at(t, duration=d)`: fn(execution) at t; if it returns a callable, that runs at t + d."""

    time: float
    fn: Callable[[ScenarioExecution], Any]
    duration: float | None = None


class Orchestrator:
    def __init__(self, execution: ScenarioExecution, *, clock: Clock, backend: Backend, topology: Topology,
                 cluster: FLCluster, controller: Controller, policy: PolicyEngine | None = None,
                 events: list[ScenarioEvent] | None = None,
                 callbacks: list[TimedCallback] = (), status_callbacks: list[StatusCallback] = (),
                 on_event: Callable[..., None] | None = None, on_round_end: Callable[..., None] | None = None,
                 nodes=None):
        self.execution = execution
        self.config = execution.config
        self.clock, self.backend, self.topology, self.cluster = clock, backend, topology, cluster
        self.controller = controller
        self.policy = policy or PolicyEngine()
        self.events = list(self.config.events if events is None else events)
        self.callbacks = list(callbacks)
        self.status_callbacks = list(status_callbacks)
        self.on_event = on_event
        self.on_round_end = on_round_end
        self.nodes = nodes  # fl.nodes.NodeProcesses: the nodes executor trains and aggregates in processes
        self._cancel = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._sampled_at: float | None = None  # the time of the last sample: one per instant
        self._sample_due: float | None = None  # the time of the pending sample an event asked for
        self._link_groups = {g: topology.links_in(g) for g in LINK_GROUPS}
        self._server_down: list = []  # shared with the events (EventContext.server_down, server_crashes)
        self._server_crashes: list = []

    # -- control ------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()
        self._resume.set()

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def _set_state(self, state: ScenarioState) -> None:
        self.execution.state = state
        for cb in self.status_callbacks:
            cb(self.execution)

    # -- run -----------------------------------------------------------------------------
    def run(self) -> ScenarioExecution:
        ex = self.execution
        try:
            self._set_state(ScenarioState.INITIALIZING)
            if self.nodes is not None:
                self.nodes.start()  # before scenario time 0 (a wall clock restarts below)
                self.clock.start()
            self._schedule()
            ex.start_time = self.clock.now()
            self._set_state(ScenarioState.RUNNING)
            self._run_rounds()
            ex.end_time = self.clock.now()
            self._set_state(ScenarioState.CANCELLED if self._cancel.is_set() else ScenarioState.COMPLETED)
        except UnavailableError:  # a capability this machine lacks, met mid-run: a skip, not a failure
            self._set_state(ScenarioState.CANCELLED)
            raise
        except Exception as exc:  # the execution keeps what it collected, and says why it stopped
            ex.end_time = self.clock.now()
            ex.error_message = str(exc) if isinstance(exc, FlopynetError) else f"{type(exc).__name__}: {exc}"
            self._set_state(ScenarioState.FAILED)
        finally:
            ex.policy_metrics = self.policy.metrics()  # the record holds plain data, not the live engine
            if self.nodes is not None:
                self.nodes.stop()
            self.backend.teardown()
        return ex

    def _schedule(self) -> None:
        ctx = EventContext(self.backend, self.topology, self.cluster, self.policy, self.controller, self.clock,
                           self.execution.seed, changed=self._request_sample, nodes=self.nodes,
                           server_down=self._server_down, server_crashes=self._server_crashes)
        for event in self.events:  # clients that join later are away until then
            if event.event_type == EventType.CLIENT_JOIN:
                for c in event_clients(event):
                    self.cluster.go_away(c, not_yet_joined(event))
        sched = self.clock.scheduler
        for index, event in enumerate(self.events):
            sched.at(event.trigger_time, lambda e=event, i=index: self._start_event(e, i, ctx), str(event.event_type))
        for cb in self.callbacks:
            sched.at(cb.time, lambda cb=cb: self._start_callback(cb), getattr(cb.fn, "__name__", "callback"))
        self._schedule_sample(0)

    def _start_event(self, event: ScenarioEvent, index: int, ctx: EventContext) -> None:
        now = self.clock.now()
        undo = HANDLERS[event.event_type](event, ctx, index)
        record = EventRecord(str(event.event_type), event.target, now, description=event.description)
        self.execution.metrics.events.append(record)
        self.execution.events_triggered.append(f"{event.event_type}@{now:g}")
        self._request_sample()
        self._notify_event(event, "start")
        duration = event_duration(event)
        if duration is not None:
            def end() -> None:
                undo()
                record.end_time = self.clock.now()
                self._request_sample()
                self._notify_event(event, "end")
            # at its nominal time: on a wall clock the start may fire a little late, the end stays put
            self.clock.scheduler.at(max(event.trigger_time + duration, now), end, f"{event.event_type} end")

    def _start_callback(self, cb: TimedCallback) -> None:
        undo = cb.fn(self.execution)
        if callable(undo) and cb.duration is not None:
            self.clock.scheduler.at(max(cb.time + cb.duration, self.clock.now()), undo, "callback end")

    def _notify_event(self, event: ScenarioEvent, phase: str) -> None:
        if self.on_event is not None:
            self.on_event(event=event, phase=phase, execution=self.execution)

    def _schedule_sample(self, k: int) -> None:
        """The k-th monitor sample, at k intervals; each schedules the next, so memory does not grow
        with the scenario's nominal duration."""
        interval = self.execution.metrics.monitor_interval
        if k * interval <= self.config.duration_seconds:
            self.clock.scheduler.at(k * interval, lambda: self._periodic_sample(k), "monitor", priority=1)

    def _periodic_sample(self, k: int) -> None:
        self._schedule_sample(k + 1)
        self._sample()

    def _request_sample(self) -> None:
        """A sample at this instant once everything due now has run (priority 1): two events starting
        together give one sample that shows both."""
        now = self.clock.now()
        if self._sample_due != now:
            self._sample_due = now
            self.clock.scheduler.at(now, self._sample, "sample", priority=1)

    def _sample(self) -> None:
        """Sample the network now, unless this instant already has its sample (the backend's
        utilisation is averaged since its previous sample: a second one would read an empty window)."""
        now = self.clock.now()
        if self._sampled_at == now:
            return
        self._sampled_at = now
        stats = self.backend.stats()
        violations, security_events = self.policy.take_counts()
        values = {}
        for group, part in [(None, stats), *((g, stats.over(links)) for g, links in self._link_groups.items())]:
            if part is not None:  # over all links, then over each group of links
                means = (part.latency_ms, part.bandwidth_utilization, part.packet_loss)
                values.update({m if group is None else group_metric(m, group): v
                               for m, v in zip(LINK_METRICS, means, strict=True)})
        self.execution.metrics.sample(now, {
            **values,
            "fl_active_clients": len(self._reachable_clients()),
            "policy_violations": violations,
            "security_events": security_events,
        })

    def _reachable_clients(self) -> list[str]:
        """Clients that can take part now: available, not quarantined, and reachable from the server."""
        if self._server_down:
            return []
        now, reached = self.clock.now(), self.backend.reachable(self.topology.server)
        return [c for c in self.cluster.available() if c in reached and self.policy.allowed(c, now)]

    def _run_rounds(self) -> None:
        fl, end = self.config.fl_config, self.config.duration_seconds
        rnd = 0
        while rnd < fl.total_rounds and not self._cancel.is_set():
            if not self._resume.is_set():  # paused between rounds until resume() or cancel()
                self._set_state(ScenarioState.PAUSED)
                self._resume.wait()
                if self._cancel.is_set():
                    break
                self._set_state(ScenarioState.RUNNING)
            now = self.clock.now()
            if now >= end:
                break
            self.clock.advance_to(now)  # what is due at the round's start takes effect for the round
            self.cluster.round = rnd + 1
            candidates = self._reachable_clients()
            if not candidates:  # nobody to train: wait for the next thing that may change that
                self.clock.advance_to(min(self.clock.scheduler.next_time(), end))
                continue
            rnd += 1
            if not self._round(rnd, candidates, now, end):
                break

    def _round(self, rnd: int, candidates: list[str], start: float, end: float) -> bool:
        """One FL round; False if the scenario ended before the round could finish."""
        fl, cluster, server = self.config.fl_config, self.cluster, self.topology.server
        self._sample()
        deadline = min(start + fl.round_timeout_seconds, end) if fl.round_timeout_seconds else end
        selected = cluster.select(candidates, fl.clients_per_round, rnd)
        if self.nodes is not None and self.backend.carries_node_traffic:
            return self._round_on_nodes(rnd, selected, start, deadline, end)
        generation = {c: cluster.clients[c].generation for c in selected}
        nbytes = cluster.transfer_bytes
        work, tampers, arrived = {}, {}, {}

        def downloaded(client: str):
            def start_training(t: float) -> Flow | None:
                if not self._alive(client, generation):
                    return None
                tampers[client] = list(cluster.clients[client].tampers)  # the attacks in force now
                compute = cluster.compute_seconds(client)
                if cluster.keeps_partial_work and deadline < end:
                    # FedProx: a straggler sends what it managed, leaving time for its upload
                    # (estimated as long as its download took)
                    share = cluster.work_fraction(client, deadline - t - (t - start))
                    if share < 1.0:
                        work[client], compute = max(share, 1e-9), compute * share
                return Flow(client, server, nbytes, t + compute, on_complete=lambda t2: arrived.__setitem__(client, t2))
            return start_training

        crashes = len(self._server_crashes)
        got = self.backend.transfer([Flow(server, c, nbytes, start, on_complete=downloaded(c)) for c in selected],
                                    deadline)
        returned = [c for c in selected if c in arrived and self._alive(c, generation)]
        if len(self._server_crashes) > crashes:  # the server crashed during the round: its updates are gone
            returned = []
        # the updates depend only on the round's global model, each client's data, seed, work and the
        # attacks in force when it started: train the returned clients together, batched where possible
        now = self.clock.now()
        if now >= end and len(returned) < len(selected):
            return False
        if self.nodes is not None:  # sim: the model timed the round; the processes train who made it
            with self.clock.hold():
                done = self.nodes.round(rnd, returned, 3600.0, self._tasks(returned, work, tampers),
                                        policy=asdict(self.policy.active))
            # the transfers are the network model's (a client that crashed after its download had it)
            done = {**done, "bytes_down": nbytes * sum(t is not None for t in got), "bytes_up": nbytes * len(arrived)}
            return self._record_node_round(rnd, start, now, selected, done, {c for c in returned if tampers[c]})
        with self.clock.hold():  # on a wall clock, training takes the device profile's time, spent in the flows
            updates = {u.client: u for u in cluster.train(returned, rnd, work, tampers)}
            attackers = {c for c in returned if tampers[c]}
            accepted = self.policy.screen([updates[c] for c in returned], cluster.global_params, now, attackers)
            # a robust rule with too few updates (clients lost or quarantined) keeps the global model
            aggregated = len(accepted) >= rule_spec(fl.aggregation_method).minimum_updates(fl.aggregation_parameters)
            if aggregated:
                cluster.aggregate(accepted)
            accuracy, loss = cluster.evaluate()
        record = RoundRecord(rnd, start, now, returned, [c for c in selected if c not in returned],
                             bytes_up=nbytes * len(arrived),
                             bytes_down=nbytes * sum(t is not None for t in got), accuracy=accuracy, loss=loss,
                             rejected=by_client_number(set(returned) - {u.client for u in accepted}),
                             aggregated=aggregated)
        return self._end_round(record)

    # -- the nodes executor ------------------------------------------------------------------------
    def _round_on_nodes(self, rnd: int, selected: list[str], start: float, deadline: float, end: float) -> bool:
        """A round whose traffic and time are the node processes' own (netns): the server sends the model
        through the real network and waits for updates until the deadline on its own clock, while events
        due meanwhile fire here."""
        clock, scale = self.clock, float(getattr(self.clock, "time_scale", 1.0))
        tampers = {c: list(self.cluster.clients[c].tampers) for c in selected}
        tasks = self._tasks(selected, {}, tampers)
        for c in selected:  # the device profile: a node trains at least as long as its device would (scaled)
            tasks[c]["device_seconds"] = self.cluster.device_seconds(c) / scale

        def waiting() -> float:  # events and samples due now, mid-round included
            clock.advance_to(clock.now())
            return max(0.0, (clock.scheduler.next_time() - clock.now()) / scale)
        done = self.nodes.round(rnd, selected, max(0.0, (deadline - start) / scale), tasks, waiting,
                                asdict(self.policy.active))
        now = clock.now()
        if now >= end and len(done["participants"]) < len(selected):
            return False
        return self._record_node_round(rnd, start, now, selected, done, {c for c in selected if tampers[c]})

    @staticmethod
    def _tasks(clients: list[str], work: dict, tampers: dict) -> dict:
        """What each client's process is told with the model: its share of local steps (FedProx's partial
        work) and the attacks in force when it started."""
        return {c: {"work": work.get(c), "tampers": [[t.kind, t.params] for t in tampers.get(c, ())]} for c in clients}

    def _record_node_round(self, rnd: int, start: float, now: float, selected: list[str], done: dict,
                           attackers: set[str]) -> bool:
        """The round's record from what the server measured (times in scenario seconds); the server's
        screening of the updates is booked in the policy engine here. Before the server finished a round,
        the model is the initial one this process also holds (same seed)."""
        scale = float(getattr(self.clock, "time_scale", 1.0))
        accuracy, loss = (done["accuracy"], done["loss"]) if done["accuracy"] is not None else self.cluster.evaluate()
        record = RoundRecord(rnd, start, now, list(done["participants"]),
                             [c for c in selected if c not in done["participants"]],
                             bytes_up=done["bytes_up"], bytes_down=done["bytes_down"], accuracy=accuracy,
                             loss=loss, aggregated=done["aggregated"], failed=list(done["failed"]),
                             rejected=by_client_number(self.policy.record(done["participants"], done["flags"], now,
                                                                          attackers)),
                             client_times={c: {"transfer_seconds": t["transfer_seconds"] * scale,
                                               "train_seconds": t["train_seconds"] * scale}
                                           for c, t in sorted(done["times"].items(), key=lambda kv: client_number(kv[0]))})
        return self._end_round(record)

    def _end_round(self, record: RoundRecord) -> bool:
        """Keep the round's record, sample the network at its end and tell the round_end hook."""
        self.execution.metrics.record_round(record)
        self._sample()
        self.execution.current_round = record.round
        if self.on_round_end is not None:
            self.on_round_end(round=record.round, metrics=record, execution=self.execution)
        return True

    def _alive(self, client: str, generation: dict[str, int]) -> bool:
        c = self.cluster.clients[client]
        return not c.away and c.generation == generation[client]

