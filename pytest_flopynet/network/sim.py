"""The embedded simulated network: flows on the topology graph in scenario time (DESIGN.md, Time model).

Rates are piecewise constant: concurrent flows share each link direction weighted max-min fairly
(by RTT for loss-based congestion control), each flow capped by what its congestion control allows
under the path's loss (network/flows.py: the window, retransmission timeouts) and by slow start, and
rates are recomputed whenever a flow starts or ends, slow start doubles a window, or a condition
changes a link, so an event that fires mid-transfer takes effect mid-transfer. A lossy path delivers
1 - p of what a flow sends (the rest is retransmitted). Each transfer also pays a connection set-up
(1 RTT, plus the expected SYN timeouts under loss) before its first byte and the one-way
propagation delay after its last. Background flows (floods) compete like any TCP flow; with the
controller's traffic_prioritization on, FL flows are served first and background flows share what
is left.
A link's utilisation in `stats()` is the bytes it carried since the previous sample over what it
could have carried (as the netns backend reads it from port counters), not the load of one instant.
"""
from __future__ import annotations

import itertools
import math
import subprocess
from dataclasses import dataclass, field

from ..controller.routing import Controller, Hop
from .backend import Condition, Flow, LinkState, NetworkStats, check_names, link_states
from .flows import (GOODPUT, INITIAL_WINDOW, MSS_BYTES, goodput, handshake_seconds, max_min_rates, sawtooth,
                    share_weight, stall_per_byte, window_rate)
from .topology import Topology

_DONE_BYTES = 1e-6


@dataclass(eq=False)
class _Transfer:
    flow: Flow
    phase: str = "wait"  # wait -> setup -> active -> tail -> done
    remaining: float = 0.0
    path: list[Hop] | None = None
    ready_at: float = math.inf
    tail_end: float = math.inf
    rate: float = 0.0  # bytes/s sent, retransmissions included
    goodput: float = 0.0  # bytes/s delivered
    window: float = 0.0  # slow start: bytes this round trip may send (0 once slow start is over)
    window_left: float = 0.0  # of which not yet sent; the flow idles at 0 until the round ends
    round_ends: float = math.inf
    done_at: float | None = None
    conditions_seen: int = field(default=-1)


class SimNetwork:
    name = "sim"

    def __init__(self, clock, controller: Controller | None = None, *, worker: str = "main",
                 options: dict | None = None):  # holds no machine resources: worker and options unused
        self.clock = clock
        self.controller = controller
        self.topology: Topology | None = None
        self._conditions: dict[int, Condition] = {}
        self._stopped: set[int] = set()
        self._handles = itertools.count(1)
        self._version = 0
        self._active: list[_Transfer] = []
        self._undetected: dict[int, object] = {}  # failures the controller has not seen yet -> entry
        self._bg_rates: dict[tuple[int, int], float] = {}
        self._rates_version = -1
        self.links: dict[str, LinkState] = {}
        self._carried: dict[Hop, float] = {}  # bytes per link direction since the last sample
        self._could_carry: dict[str, float] = {}  # bytes per link direction at its capacity, same window
        self._integrated_to = 0.0  # scenario time up to which _carried is counted
        self._capacity_counted_to = 0.0  # and _could_carry
        self._sampled_at = 0.0

    # -- Backend protocol -------------------------------------------------------------
    def unsupported(self, features: frozenset[str]) -> str | None:
        return None  # every condition

    def build(self, topology: Topology) -> None:
        self.topology = topology
        if self.controller is None:
            self.controller = Controller(topology)
        self._recompute_links()

    def apply(self, condition: Condition) -> int:
        check_names(self.topology, condition)
        handle = next(self._handles)
        if not (condition.links or condition.background):  # hosts_down: the FL cluster's availability says it
            self._stopped.add(handle)
            return handle
        self._integrate(self.clock.now())  # at the rates before the change
        self._conditions[handle] = condition
        if condition.down and condition.detect_after > 0:
            self._undetected[handle] = self.clock.scheduler.at(
                self.clock.now() + condition.detect_after, lambda: self._detected(handle), "failure detected")
        self._recompute_links()
        return handle

    def revert(self, handle: int) -> None:
        if handle in self._stopped:
            self._stopped.discard(handle)
            return
        self._integrate(self.clock.now())
        del self._conditions[handle]
        entry = self._undetected.pop(handle, None)
        if entry is not None:
            entry.cancel()
        self._recompute_links()

    def _detected(self, handle: int) -> None:
        self._integrate(self.clock.now())
        self._undetected.pop(handle, None)
        self._recompute_links()

    def reachable(self, src: str) -> set[str]:
        return self.controller.reachable(src)

    def stats(self) -> NetworkStats:
        """Latency and loss now; utilisation averaged since the previous call (an empty window gives
        the load of this instant)."""
        now = self.clock.now()
        self._integrate(now)
        self._count_capacity(now)
        if self._rates_version != self._version:
            self._allocate(self._active)
        window = now - self._sampled_at
        load = self._load() if window <= 0 else None
        per_link = {}
        for name, link in self.topology.links.items():
            state = self.links[name]
            if load is not None:
                cap = self._capacity(state)
                util = max(load.get((name, link.a), 0.0), load.get((name, link.b), 0.0)) / cap if state.up else 0.0
            else:
                could = self._could_carry.get(name, 0.0)
                carried = max(self._carried.get((name, link.a), 0.0), self._carried.get((name, link.b), 0.0))
                util = min(carried / could, 1.0) if could > 0 else 0.0
            per_link[name] = {"latency_ms": state.delay_ms, "bandwidth_mbps": state.bw_mbps, "loss": state.loss,
                              "up": state.up, "utilization": util}
        self._carried, self._could_carry, self._sampled_at = {}, {}, now
        self.controller.link_utilization = {name: d["utilization"] for name, d in per_link.items()}
        return NetworkStats.of(per_link)

    def _load(self) -> dict[Hop, float]:
        """Bytes/s each link direction carries at this instant (FL and background flows)."""
        load: dict[Hop, float] = {}
        flows = [(t.path, t.rate) for t in self._active if t.phase == "active" and t.path]
        flows += [(self._bg_path(key), rate) for key, rate in self._bg_rates.items()]
        for path, rate in flows:
            for hop, share in self._carried_share(path or []).items():
                load[hop] = load.get(hop, 0.0) + rate * share
        return load

    def _integrate(self, now: float) -> None:
        """Count what every link carried, and could have carried, from the last count until now, at
        the rates in force over that time (called before anything changes them)."""
        dt = now - self._integrated_to
        if dt <= 0:
            return
        for hop, rate in self._load().items():
            self._carried[hop] = self._carried.get(hop, 0.0) + rate * dt
        self._integrated_to = now

    def _count_capacity(self, now: float) -> None:
        """Count what every link could have carried since the last count, at the capacities in force then:
        called when they change and when a sample reads them, not at every rate change (a population of
        links is counted once per change, not once per flow event)."""
        dt = now - self._capacity_counted_to
        if dt > 0:
            for name, state in self.links.items():
                if state.up:
                    self._could_carry[name] = self._could_carry.get(name, 0.0) + self._capacity(state) * dt
        self._capacity_counted_to = now

    # -- node processes (the nodes executor) -----------------------------------------------------
    carries_node_traffic = False  # they talk over loopback; this model times the round

    def spawn(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """A process of `host`: on this machine, in its own process group."""
        return subprocess.Popen(argv, start_new_session=True, **kwargs)

    def address(self, host: str) -> str:
        return "127.0.0.1"

    def teardown(self) -> None:
        self._active.clear()
        self._conditions.clear()
        self._bg_rates.clear()

    # -- flows ----------------------------------------------------------------------------
    def transfer(self, flows: list[Flow], deadline: float = math.inf) -> list[float | None]:
        transfers = [_Transfer(f, remaining=float(f.nbytes)) for f in flows]
        self._integrate(self.clock.now())
        self._active = transfers
        rates_version = None
        try:
            while True:
                now = self.clock.now()
                self._integrate(now)
                changed = self._advance_phases(transfers, now)
                if all(t.phase == "done" for t in transfers):
                    break
                if changed or rates_version != self._version:
                    self._reroute(transfers, now)
                    self._allocate(transfers)
                    rates_version = self._version
                nxt = min(self._next_change(transfers, now), self.clock.scheduler.next_time(), deadline)
                if math.isinf(nxt):
                    break  # nothing can ever change: the remaining flows never finish
                for t in transfers:
                    if t.phase == "active":
                        t.remaining = max(t.remaining - t.goodput * (nxt - now), 0.0)
                        if t.window:
                            t.window_left = max(t.window_left - t.rate * (nxt - now), 0.0)
                self.clock.advance_to(nxt)
                if nxt >= deadline and not self._advance_phases(transfers, nxt):
                    break
        finally:
            self._integrate(self.clock.now())
            self._active = []
            self._allocate(self._active)  # background flows take what the FL flows leave
        return [t.done_at for t in transfers[:len(flows)]]

    def _advance_phases(self, transfers: list[_Transfer], now: float) -> bool:
        """Move flows through their phases at time now; True if the set of active flows changed.
        Flows that a completed flow's on_complete returns join the transfer."""
        changed, spawned = False, []
        for t in transfers:
            if t.phase == "wait" and t.flow.start <= now:
                t.phase, changed = "setup", True
                self.controller.stats["flows"] += 1
                t.path = self.controller.route(t.flow.src, t.flow.dst)
                t.ready_at = now + self._handshake(t.path) if self._usable(t.path) else math.inf
            if t.phase == "setup" and t.ready_at <= now:
                t.phase, changed = "active", True
                rtt = self._rtt(t.path)
                if rtt > 0:
                    t.window = t.window_left = float(INITIAL_WINDOW * MSS_BYTES)
                    t.round_ends = now + rtt
            if t.phase == "active" and t.window:
                changed |= self._slow_start(t, now)
            if t.phase == "active" and (t.remaining <= _DONE_BYTES or
                                        (t.goodput > 0 and now + t.remaining / t.goodput <= now)):
                t.phase, changed = "tail", True
                t.tail_end = now + self._rtt(t.path) / 2 if t.path is not None else math.inf
            if t.phase == "tail" and t.tail_end <= now:
                t.phase, t.done_at, changed = "done", now, True
                if t.flow.on_complete is not None:
                    follow = t.flow.on_complete(now)
                    spawned += [follow] if isinstance(follow, Flow) else list(follow or [])
        transfers += [_Transfer(f, remaining=float(f.nbytes)) for f in spawned]
        return changed

    def _slow_start(self, t: _Transfer, now: float) -> bool:
        """Slow start in rounds (Cardwell, Savage & Anderson 2000): a round trip may send `window` bytes at
        the flow's rate, then the flow waits for the round's ACKs; a round that ends with its window sent
        doubles it, one that ends with some of it unsent (the window has outgrown the flow's share) ends
        slow start. True if the flow's rate must change."""
        if t.path is None:  # cut off: the round waits for a route
            t.round_ends = math.inf
            return False
        if math.isinf(t.round_ends):  # a route again: the round starts over
            t.window_left, t.round_ends = t.window, now + self._rtt(t.path)
            return True
        if t.window_left > 0 and t.rate > 0 and now + t.window_left / t.rate <= now:
            t.window_left = 0.0  # what is left is below the clock's resolution: the window is out
        if t.round_ends <= now:
            if t.window_left > _DONE_BYTES:
                t.window = t.window_left = 0.0
                t.round_ends = math.inf
            else:
                t.window *= 2
                t.window_left = t.window
                t.round_ends = now + self._rtt(t.path)
            return True
        return t.window_left <= _DONE_BYTES and t.rate > 0  # out: its rate drops to 0 until the round ends

    def _reroute(self, transfers: list[_Transfer], now: float) -> None:
        for t in transfers:
            if t.phase == "active":
                t.path = self.controller.route(t.flow.src, t.flow.dst)
            elif t.phase == "setup" and math.isinf(t.ready_at):
                t.path = self.controller.route(t.flow.src, t.flow.dst)
                if self._usable(t.path):
                    t.ready_at = now + self._handshake(t.path)

    def _usable(self, path: list[Hop] | None) -> bool:
        """A path the controller installed can still be stale: a failed link it has not seen yet."""
        return path is not None and all(self.links[name].up for name, _ in path)

    def _bg_path(self, key: tuple[int, int]) -> list[Hop] | None:
        src, dst = self._conditions[key[0]].background[key[1]]
        return self.controller.route(src, dst)

    def _allocate(self, transfers: list[_Transfer]) -> None:
        """Weighted max-min fair rates for the active FL flows and the background flows, each capped by its
        congestion control under the path's loss (and FL flows by slow start); with traffic
        prioritisation, FL flows first and background flows on what is left."""
        self._rates_version = self._version
        cc = self.topology.congestion_control
        for t in transfers:
            t.rate = t.goodput = 0.0
        fl = {t: t.path for t in transfers if t.phase == "active" and self._usable(t.path)}
        bg = {(h, i): self._bg_path((h, i)) for h, c in self._conditions.items() for i in range(len(c.background))}
        bg = {k: p for k, p in bg.items() if self._usable(p)}
        capacity = {hop: self._capacity(self.links[hop[0]]) for p in [*fl.values(), *bg.values()] for hop in p}
        flows = {**fl, **bg}
        caps = {f: window_rate(cc, self._rtt(p), self._path_loss(p)) for f, p in flows.items() if p}
        for t in fl:
            if t.window and t.window_left <= _DONE_BYTES:
                caps[t] = 0.0  # slow start: this round's window is out, it waits for the ACKs
        weights = {f: share_weight(cc, self._rtt(p)) for f, p in flows.items()}
        usage = {(f, hop): share for f, p in flows.items() for hop, share in self._carried_share(p).items()}

        def fill(group: dict, capacity: dict) -> dict:
            """Max-min rates, each loss-based flow at the sawtooth of its share (found without window caps)
            and its window's rate."""
            held = {f: 0.0 for f in group if caps.get(f) == 0.0}
            share = max_min_rates(group, capacity, held, weights, usage)
            return max_min_rates(group, capacity, {f: sawtooth(share[f], caps[f]) for f in group if f in caps},
                                 weights, usage)

        if self.controller.traffic_prioritization:
            rates = fill(fl, capacity)
            left = dict(capacity)
            for f, p in fl.items():
                for hop in p:
                    left[hop] = max(left[hop] - rates[f] * usage[(f, hop)], 0.0)
            rates.update(fill(bg, left))
        else:
            rates = fill(flows, capacity)
        for t, p in fl.items():  # on average a flow sends what it delivers, retransmissions included
            loss = self._path_loss(p)
            stall = stall_per_byte(cc, self._rtt(p), loss, min((capacity[hop] for hop in p), default=math.inf))
            t.goodput = goodput(rates[t], loss, stall)
            t.rate = t.goodput / (1.0 - loss) if loss < 1.0 else 0.0
        self._bg_rates = {k: rates[k] for k in bg}

    def _next_change(self, transfers: list[_Transfer], now: float) -> float:
        times = [math.inf]
        for t in transfers:
            if t.phase == "wait":
                times.append(t.flow.start)
            elif t.phase == "setup":
                times.append(t.ready_at)
            elif t.phase == "active":
                if t.goodput > 0:
                    times.append(now + t.remaining / t.goodput)
                if t.window:
                    times.append(t.round_ends)
                    if t.rate > 0 and t.window_left > 0:
                        times.append(now + t.window_left / t.rate)
            elif t.phase == "tail":
                times.append(t.tail_end)
        return max(min(times), now)

    # -- link state -------------------------------------------------------------------------
    def _recompute_links(self) -> None:
        """After a change of conditions; callers count the traffic up to now (`_integrate`) first."""
        self._count_capacity(self.clock.now())
        self.links = link_states(self.topology, self._conditions.values())
        self._version += 1
        seen = {h: c for h, c in self._conditions.items() if h not in self._undetected}
        seen_links = self.links if len(seen) == len(self._conditions) else link_states(self.topology, seen.values())
        self.controller.network_changed(seen_links)
        if not self._active:  # within a transfer, its loop reallocates after rerouting
            self._allocate(self._active)

    @staticmethod
    def _capacity(state: LinkState) -> float:
        """Bytes/s of TCP payload a link direction carries."""
        return state.bw_mbps * 1e6 / 8 * GOODPUT

    def _rtt(self, path: list[Hop]) -> float:
        return 2 * sum(self.links[name].delay_ms for name, _ in path) / 1000.0

    def _carried_share(self, path: list[Hop]) -> dict[Hop, float]:
        """The share of what a flow sends that each link of its path carries: a lossy link drops before it
        transmits (as netem, nftables and GNS3's filters do), so it and the links after it carry only what
        survived it."""
        shares, keep = {}, 1.0
        for hop in path:
            keep *= 1.0 - self.links[hop[0]].loss
            shares[hop] = keep
        return shares

    def _handshake(self, path: list[Hop]) -> float:
        loss = self._path_loss(path)  # a link drops as much each way
        return handshake_seconds(self._rtt(path), loss, loss)

    def _path_loss(self, path: list[Hop]) -> float:
        keep = 1.0
        for name, _ in path:
            keep *= 1.0 - self.links[name].loss
        return 1.0 - keep
