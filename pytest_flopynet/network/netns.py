"""The netns backend: a NetnsLab (network/lab.py: namespaces, Open vSwitch, HTB, nftables) under the
project's Ryu app, with a transfer agent in every host's namespace."""
from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import selectors
import subprocess
import sys
import time
import warnings

from ..controller.ryu_controller import RyuController, ryu_python
from ..errors import UnavailableError
from .agent import BULK_PORT, FL_PORT
from .backend import Flow, NetworkStats, check_names, link_states
from .lab import NetnsLab, close_pipes, kill_group, netem_available, tool, unavailable
from .topology import Topology


BACKGROUND_SHARE = 0.1  # with traffic_prioritization, non-FL traffic may use this share of a switch's slowest link


class NetnsNetwork:
    """The Backend on a NetnsLab under the project's Ryu app: every flow is a real TCP connection
    between the transfer agents (network/agent.py) of two namespaces, timed where its last byte
    arrives; conditions are HTB rates, nftables drop rules, links down and stopped agents.

    Time: the clock is a WallClock. With time_scale s, links run at s times their bandwidth (and
    1/s their delay) so that a transfer's real duration times s is the scenario's (time
    dilation); the machine's forwarding capacity bounds the bandwidth times s it can honour."""

    name = "netns"

    def __init__(self, clock, controller, *, worker: str = "main", options: dict | None = None):
        self.clock, self.controller, self.worker = clock, controller, worker
        self.options = dict(options or {})
        self.scale = float(getattr(clock, "time_scale", 1.0))
        self.fl_port, self.bulk_port = FL_PORT, BULK_PORT
        self.node_port = self.options.get("node_port")  # the nodes executor's FL port: Ryu prioritises it
        self.lab: NetnsLab | None = None
        self.ryu = None
        self.topology: Topology | None = None
        self.agents: dict[str, subprocess.Popen] = {}
        self._buffers: dict[int, bytes] = {}
        self._conditions: dict[int, object] = {}
        self._handles = itertools.count(1)
        self._ids = itertools.count(1)
        self._applied: dict = {}
        self._losses: dict[str, float] = {}
        self._jitters: dict[str, float] = {}
        self._floods: dict[tuple[str, str, int], int] = {}  # (src, dst, k) -> flow id
        self._down_hosts: set[str] = set()
        self._inflight: dict[int, tuple] = {}
        self._last_ports: tuple[float, dict] | None = None
        self.rtt_ms = 0.0

    # -- set-up and teardown --------------------------------------------------------------------
    def unsupported(self, features: frozenset[str]) -> str | None:
        reason = unavailable()
        if reason:
            return reason
        if features & {"extra_delay_ms", "jitter_ms"} and not netem_available():
            return ("added delay needs the kernel's netem qdisc, which this kernel lacks "
                    "(tc: 'Specified qdisc kind is unknown'); run it on the sim backend")
        return None

    def build(self, topology: Topology) -> None:
        reason = unavailable()
        if reason:
            raise UnavailableError(reason)
        ryu_python()
        if self.controller.controller_type != "ryu":
            warnings.warn(f"controller_type {self.controller.controller_type!r}: the netns backend runs the project's "
                          f"Ryu app (the only controller it has) in its place", stacklevel=2)
        self.topology = topology
        self.lab = lab = NetnsLab(topology, self.worker, label=str(self.options.get("label", "scenario")))
        try:
            slowest = {s: min(topology.links[n].bw_mbps for n in topology.links_of(s)) for s in topology.switches}
            plan = lab.write_plan(lab.run_dir / "plan.json", fl_port=self.node_port or self.fl_port,
                                  prioritize=bool(self.controller.traffic_prioritization),
                                  background_kbps={s: bw * self.scale * 1000 * BACKGROUND_SHARE for s, bw in slowest.items()},
                                  stats_file=str(lab.run_dir / "stats.json"), stats_interval=0.5)
            self.ryu = RyuController(plan, netns=lab.switch_namespace())
            self.ryu.start()
            lab.adopt(self.ryu.process)
            lab.controller = self.ryu.target
            lab.start()
            self._reconcile()
            for host in sorted(topology.hosts):
                self._start_agent(host)
            self._wait_for_routes()
        except BaseException:
            self.teardown()
            raise

    def _start_agent(self, host: str) -> None:
        proc = self.lab.popen(host, [sys.executable, "-m", "pytest_flopynet.network.agent",
                                     "--ports", f"{self.fl_port},{self.bulk_port}",
                                     "--congestion-control", self.topology.congestion_control],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.agents[host] = proc
        self._buffers[proc.stdout.fileno()] = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                sel.select(timeout=1)
                for report in self._read(proc):
                    if report.get("ev") == "ready":
                        return
                if proc.poll() is not None:
                    break
        raise RuntimeError(f"the transfer agent of {host} did not start")

    def _wait_for_routes(self, timeout: float = 30.0) -> None:
        """Every host reaches the server through Ryu's flows (proxy ARP, routes installed)."""
        server, lab = self.topology.server, self.lab
        waiting = [h for h in sorted(self.topology.hosts) if h != server]
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            pings = {h: subprocess.Popen([tool("ip"), "netns", "exec", lab.ns(h), "ping", "-n", "-c", "1", "-W", "1",
                                          lab.ip(server)], stdout=subprocess.PIPE, text=True) for h in waiting}
            for host, ping in pings.items():
                ping.communicate()
                if ping.returncode == 0:
                    waiting.remove(host)
        if waiting:
            raise RuntimeError(f"no route from {', '.join(waiting)} to {server} after {timeout:g} s "
                               f"(Ryu's log: {self.ryu.log.read_text()[-500:] if self.ryu else ''})")
        # the links' own latency, for the monitor where netem is missing: the best of five round trips
        # from the first client (ARP and flow set-up already done)
        client = self.topology.clients[0] if self.topology.clients else server
        out = lab.run(client, ["ping", "-n", "-q", "-c", "5", "-i", "0.01", lab.ip(server)]).stdout
        if "min/avg" in out:
            self.rtt_ms = float(out.rsplit("=", 1)[1].split("/")[0])

    def _switch_stats(self) -> dict:
        """What Ryu last collected from the switches; kept in controller.stats["switches"] (its
        reroutes, and per switch the flow count and the bytes of FL and other traffic)."""
        try:
            stats = json.loads((self.lab.run_dir / "stats.json").read_text())
        except (OSError, ValueError, AttributeError):
            return {}
        self.controller.stats["switches"] = {"reroutes": stats.get("reroutes", 0), **stats.get("flows", {})}
        return stats

    def teardown(self) -> None:
        if self.lab is not None:
            self._switch_stats()
        agents = list(self.agents.values())
        self.agents.clear()
        for proc in agents:
            close_pipes(proc)
        if self.ryu is not None:
            self.ryu.stop()
            self.ryu = None
        if self.lab is not None:
            self.lab.stop()
            self.lab = None

    # -- conditions -----------------------------------------------------------------------------
    def apply(self, condition) -> int:
        check_names(self.topology, condition)
        handle = next(self._handles)
        self._conditions[handle] = condition
        self._reconcile()
        return handle

    def revert(self, handle: int) -> None:
        del self._conditions[handle]
        self._reconcile()

    def _reconcile(self) -> None:
        """Make the lab what the active conditions say: each change applied once, and reverting
        a condition restores exactly the rates, rules and links it changed."""
        lab, netem = self.lab, netem_available()
        states = link_states(self.topology, self._conditions.values())
        jitters = {name: sum(c.jitter_ms for c in self._conditions.values() if name in c.links) for name in states}
        for name, state in states.items():
            old = self._applied.get(name)
            if old is None or old.bw_mbps != state.bw_mbps:
                lab.shape(name, state.bw_mbps * self.scale)
            if old is None or old.delay_ms != state.delay_ms or self._jitters.get(name, 0.0) != jitters[name]:
                if netem:
                    lab.delay(name, state.delay_ms / self.scale, jitters[name] / self.scale)
            if old is not None and old.up != state.up:
                lab.set_up(name, state.up)
        losses = {name: state.loss for name, state in states.items() if state.loss > 0}
        if losses != self._losses:
            lab.set_loss(losses)
            self._losses = losses
        self._applied, self._jitters = states, jitters
        self.controller.network_changed(states)
        self._reconcile_floods()
        self._reconcile_hosts()

    def _reconcile_floods(self) -> None:
        wanted: dict[tuple[str, str, int], None] = {}
        for c in self._conditions.values():
            for src, dst in c.background:
                k = 0
                while (src, dst, k) in wanted:
                    k += 1
                wanted[(src, dst, k)] = None
        for key in [k for k in self._floods if k not in wanted]:
            self._order(key[0], op="stop", id=self._floods.pop(key))
        for key in [k for k in wanted if k not in self._floods]:
            self._floods[key] = fid = next(self._ids)
            self._order(key[0], op="flood", id=fid, host=self.lab.ip(key[1]), port=self.bulk_port)

    def _reconcile_hosts(self) -> None:
        """A stopped host's agent is killed (its connections reset, as a crashed client's would) and
        started afresh when the failure ends."""
        down = {h for c in self._conditions.values() for h in c.hosts_down}
        for host in sorted(down - self._down_hosts):
            proc = self.agents.pop(host, None)
            if proc is not None:
                kill_group(proc.pid)
                proc.wait()
                close_pipes(proc)
            for fid, (flow, _) in list(self._inflight.items()):
                if host in (flow.src, flow.dst):
                    del self._inflight[fid]
        for host in sorted(self._down_hosts - down):
            self._start_agent(host)
        self._down_hosts = down

    def reachable(self, src: str) -> set[str]:
        return self.controller.reachable(src)

    # -- node processes (the nodes executor) -----------------------------------------------------
    carries_node_traffic = True  # their TCP through OVS is the round's traffic

    def spawn(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """A process in the host's namespace, in the lab's records: teardown and `flopynet cleanup`
        stop it with the rest of the lab."""
        return self.lab.popen(host, argv, **kwargs)

    def address(self, host: str) -> str:
        return self.lab.ip(host)

    # -- agents ---------------------------------------------------------------------------------
    def _order(self, agent: str, **order) -> bool:
        proc = self.agents.get(agent)
        if proc is None or proc.poll() is not None:
            return False
        try:
            proc.stdin.write((json.dumps(order) + "\n").encode())
            proc.stdin.flush()
            return True
        except OSError:
            return False

    def _read(self, proc: subprocess.Popen) -> list[dict]:
        fd = proc.stdout.fileno()
        try:
            data = os.read(fd, 1 << 16)
        except OSError:
            data = b""
        if not data:
            return []
        buffer = self._buffers.get(fd, b"") + data
        *lines, self._buffers[fd] = buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def _poll(self, timeout: float) -> list[dict]:
        reports = []
        with selectors.DefaultSelector() as sel:
            for proc in self.agents.values():
                if proc.poll() is None:
                    sel.register(proc.stdout, selectors.EVENT_READ, proc)
            if not sel.get_map():
                time.sleep(max(timeout, 0))
                return []
            for key, _ in sel.select(timeout=max(timeout, 0)):
                reports += self._read(key.data)
        return reports

    # -- flows ----------------------------------------------------------------------------------
    def transfer(self, flows, deadline: float = math.inf) -> list[float | None]:
        done: dict[int, float] = {}
        waiting: list = []
        seq = itertools.count()

        def push(flow, index) -> None:
            heapq.heappush(waiting, (flow.start, next(seq), flow, index))

        for i, f in enumerate(flows):
            push(f, i)
        clock = self.clock
        while True:
            now = clock.now()
            while waiting and waiting[0][0] <= now:
                _, _, flow, index = heapq.heappop(waiting)
                fid = next(self._ids)
                self._inflight[fid] = (flow, index)
                if flow.src in self._down_hosts or flow.dst in self._down_hosts or not self._order(
                        flow.src, op="send", id=fid, host=self.lab.ip(flow.dst), port=self.fl_port, bytes=flow.nbytes):
                    del self._inflight[fid]
            if (not waiting and not self._inflight) or now >= deadline:
                break
            horizon = min(waiting[0][0] if waiting else math.inf, clock.scheduler.next_time(), deadline)
            for report in self._poll(min((horizon - now) / self.scale, 0.5)):
                entry = self._inflight.pop(report.get("id"), None)
                if entry is None or report["ev"] != "received":
                    continue
                flow, index = entry
                t = clock.at(report["t"])
                if index is not None:
                    done[index] = t
                follow = flow.on_complete(t) if flow.on_complete else None
                for f in [follow] if isinstance(follow, Flow) else list(follow or ()):
                    push(f, None)
            clock.advance_to(clock.now())  # events and samples due now, mid-transfer included
        for fid, (flow, _) in list(self._inflight.items()):  # past the deadline: abandon
            self._order(flow.src, op="stop", id=fid)
            del self._inflight[fid]
        return [done.get(i) for i in range(len(flows))]

    # -- monitoring -----------------------------------------------------------------------------
    def stats(self):
        """Utilisation from the port counters Ryu collects (bytes per second over the last sample,
        against each link's rate); loss and latency as the links are set (latency: the measured
        round trip where netem is missing)."""
        ports = self._switch_stats().get("ports", {})
        now = time.monotonic()
        previous, self._last_ports = self._last_ports, (now, ports)
        per_link = {}
        netem = netem_available()
        for name, state in self._applied.items():
            util = 0.0
            if previous and state.up:
                elapsed = max(now - previous[0], 1e-6)
                for switch, port, _ in self.lab.ports[name].values():
                    cur, old = ports.get(switch, {}).get(str(port)), previous[1].get(switch, {}).get(str(port))
                    if cur and old:
                        rate = max(cur["tx_bytes"] - old["tx_bytes"], cur["rx_bytes"] - old["rx_bytes"]) / elapsed
                        util = max(util, rate * 8 / (state.bw_mbps * self.scale * 1e6))
            per_link[name] = {"latency_ms": state.delay_ms if netem else self.rtt_ms / 2,
                              "bandwidth_mbps": state.bw_mbps, "loss": state.loss, "up": state.up,
                              "utilization": min(util, 1.0)}
        return NetworkStats.of(per_link)
