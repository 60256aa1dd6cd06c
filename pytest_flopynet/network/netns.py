"""A topology made real on this machine: a network namespace per host, an Open vSwitch bridge per
switch on OVS's userspace datapath (no kernel module needed), veth pairs for host links and
switch-to-switch trunks, one IPv4 subnet for all hosts.

The lab runs its own ovsdb-server and ovs-vswitchd (private run directory, database and sockets),
so it never touches a system Open vSwitch. Every name carries the lab's prefix (per xdist worker and
process), and every lab records what it made in a state file, so `flopynet cleanup` can remove what
a crashed run left behind, as `mn -c` does for Mininet. Until the Ryu controller takes over, the
bridges are learning switches and RSTP keeps trunk loops (mesh) from flooding.

Every host has a fixed MAC address, every switch a datapath id and every port a fixed OpenFlow
number, written to a plan file (`write_plan`) from which the project's Ryu app routes. Links are
shaped on each sending end (HTB: the switch side for traffic towards a host, the host side for
traffic from it, both ends of a trunk), and lossy links drop in the path with nftables on the
switch ports' egress hook. NetnsNetwork (below) is the Backend on top of the lab.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import UnavailableError
from .topology import Topology

STATE_DIR = Path(tempfile.gettempdir()) / "flopynet-netns"
SUBNET = ipaddress.ip_network("10.77.0.0/16")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
TOOLS = ("ip", "tc", "nft", "ethtool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovsdb-tool")


def unavailable() -> str | None:
    """Why this machine cannot build a lab, or None."""
    if os.geteuid() != 0:
        return "the netns backend needs root (CAP_NET_ADMIN) to make namespaces and links"
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        return (f"the netns backend needs {', '.join(missing)} "
                "(Debian: apt-get install iproute2 nftables ethtool openvswitch-switch)")
    if not OVS_SCHEMA.is_file():
        return f"Open vSwitch's schema is missing ({OVS_SCHEMA})"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def sh(*argv: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([_tool(argv[0]), *argv[1:]], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


class NetnsLab:
    """Build with `start()`, use `ns(host)`, `ip(host)`, `popen(host, argv)`, tear down with `stop()`
    (also as a context manager)."""

    def __init__(self, topology: Topology, worker: str = "main", controller: str | None = None, label: str = "lab"):
        """controller: an OpenFlow target such as tcp:127.0.0.1:6653; the bridges then speak
        OpenFlow 1.3 in secure fail mode (no traffic without the controller's flows). worker and
        label (the xdist worker and the test or scenario) name the namespaces."""
        reason = unavailable()
        if reason:
            raise UnavailableError(reason)
        self.topology = topology
        # interface names are at most 15 characters: a short prefix from worker, label and process,
        # made unique against the labs that exist; namespaces also carry the worker's name
        self.prefix = _prefix(worker, label)
        self.worker = worker
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"flopynet-ovs-{self.prefix}-"))
        self.daemons: list[subprocess.Popen] = []
        self.processes: list[subprocess.Popen] = []
        hosts = sorted(topology.hosts)
        self.addresses = {h: str(SUBNET[i + 1]) for i, h in enumerate(hosts)}
        self.macs = {h: f"02:77:00:00:{(i + 1) >> 8:02x}:{(i + 1) & 255:02x}" for i, h in enumerate(hosts)}
        tag = "".join(ch for ch in worker if ch.isalnum())[:12] or "main"
        self.namespaces = {h: f"{self.prefix}-{tag}-{h}" for h in hosts}
        self.bridges = {s: f"{self.prefix}{s}" for s in topology.switches}
        self.dpids = {s: i + 1 for i, s in enumerate(sorted(topology.switches))}
        self.trunks: list[str] = []  # the root-namespace ends of every veth pair
        self.controller = controller
        self.ends: dict[str, list[tuple[str | None, str]]] = {}  # link -> (namespace or None, device) sending ends
        self.ports: dict[str, dict[str, tuple[str, int, str]]] = {}  # link -> {node: (switch, OpenFlow port, device)}
        self._htb: set[str] = set()  # devices with their HTB root in place
        self._plan_ports()
        self._record()  # claims the prefix

    def _plan_ports(self) -> None:
        """Fixed device names and OpenFlow port numbers for every link, known before anything exists."""
        next_port = {s: 1 for s in self.topology.switches}
        for i, link in enumerate(sorted(self.topology.links.values(), key=lambda link: link.name)):
            if link.a in self.namespaces or link.b in self.namespaces:
                host, switch = (link.a, link.b) if link.a in self.namespaces else (link.b, link.a)
                outer = f"{self.prefix}o{i}"
                self.ports[link.name] = {host: (switch, next_port[switch], outer)}
                next_port[switch] += 1
                self.ends[link.name] = [(None, outer), (self.ns(host), f"eth{i}")]
            else:
                pa, pb = f"{self.prefix}t{i}a", f"{self.prefix}t{i}b"
                self.ports[link.name] = {}
                for node, dev in ((link.a, pa), (link.b, pb)):
                    self.ports[link.name][node] = (node, next_port[node], dev)
                    next_port[node] += 1
                self.ends[link.name] = [(None, pa), (None, pb)]

    def write_plan(self, path: Path, **extra) -> Path:
        """The topology as the Ryu app reads it: switches, hosts and trunks with their ports."""
        hosts, trunks = {}, []
        for name, ports in self.ports.items():
            link = self.topology.links[name]
            if link.a in self.namespaces or link.b in self.namespaces:
                (host, (switch, port, _)), = ports.items()
                hosts[host] = {"ip": self.ip(host), "mac": self.macs[host], "switch": switch, "port": port}
            else:
                trunks.append({"a": link.a, "a_port": ports[link.a][1], "b": link.b, "b_port": ports[link.b][1]})
        Path(path).write_text(json.dumps({"switches": self.dpids, "hosts": hosts, "trunks": trunks, **extra}, indent=1))
        return Path(path)

    # -- names and addresses ------------------------------------------------------------------
    def ns(self, host: str) -> str:
        return self.namespaces[host]

    def ip(self, host: str) -> str:
        return self.addresses[host]

    @property
    def env(self) -> dict:
        return {**os.environ, "OVS_RUNDIR": str(self.run_dir), "OVS_DBDIR": str(self.run_dir),
                "OVS_LOGDIR": str(self.run_dir), "OVS_SYSCONFDIR": str(self.run_dir)}

    def vsctl(self, *args: str, check: bool = True) -> str:
        return sh("ovs-vsctl", f"--db=unix:{self.run_dir / 'db.sock'}", "--timeout=10", *args, env=self.env,
                  check=check).stdout

    # -- building -----------------------------------------------------------------------------
    def start(self) -> NetnsLab:
        try:
            self._record()
            self._start_ovs()
            for host, ns in self.namespaces.items():
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            for switch, bridge in self.bridges.items():
                dpid = f"other-config:datapath-id={self.dpids[switch]:016x}"
                if self.controller:
                    self.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev",
                               "fail_mode=secure", "protocols=OpenFlow13", dpid, "--", "set-controller", bridge,
                               self.controller)
                else:  # standalone: a learning switch; RSTP breaks trunk loops
                    self.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev", dpid,
                               "fail_mode=standalone", f"rstp_enable={'true' if self._loops() else 'false'}")
            for link in sorted(self.topology.links.values(), key=lambda link: link.name):
                self._link(link)
                self._record()
        except Exception:
            self.stop()
            raise
        return self

    def _loops(self) -> bool:
        switches = self.topology.graph.subgraph(self.topology.switches)
        return switches.number_of_edges() >= len(self.topology.switches)

    def _start_ovs(self) -> None:
        db, sock = self.run_dir / "conf.db", self.run_dir / "db.sock"
        sh("ovsdb-tool", "create", str(db), str(OVS_SCHEMA), env=self.env)
        self.daemons.append(subprocess.Popen(
            [_tool("ovsdb-server"), str(db), f"--remote=punix:{sock}", f"--unixctl={self.run_dir / 'ovsdb.ctl'}",
             f"--pidfile={self.run_dir / 'ovsdb.pid'}", f"--log-file={self.run_dir / 'ovsdb.log'}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self._wait_for(sock)
        self.vsctl("--no-wait", "init")
        self.daemons.append(subprocess.Popen(
            [_tool("ovs-vswitchd"), f"unix:{sock}", f"--unixctl={self.run_dir / 'vswitchd.ctl'}",
             f"--pidfile={self.run_dir / 'vswitchd.pid'}", f"--log-file={self.run_dir / 'vswitchd.log'}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self._wait_for(self.run_dir / "vswitchd.ctl")
        self._record()

    def _wait_for(self, path: Path, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while not path.exists():
            if time.time() > deadline or any(d.poll() is not None for d in self.daemons):
                log = "".join(p.read_text()[-400:] for p in self.run_dir.glob("*.log"))
                raise RuntimeError(f"Open vSwitch did not start ({path.name} missing): {log}")
            time.sleep(0.05)

    def _add_port(self, switch: str, device: str, port: int) -> None:
        self.vsctl("add-port", self.bridges[switch], device, "--", "set", "Interface", device, f"ofport_request={port}")

    def _link(self, link) -> None:
        ports = self.ports[link.name]
        if link.a in self.namespaces or link.b in self.namespaces:
            (host, (switch, port, outer)), = ports.items()
            ns, inner = self.ns(host), self.ends[link.name][1][1]
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", f"{outer}p")
            self.trunks.append(outer)  # deleted at teardown with its peer (namespace removal is lazy)
            sh("ip", "link", "set", f"{outer}p", "netns", ns)
            sh("ip", "-n", ns, "link", "set", f"{outer}p", "name", inner)
            sh("ip", "-n", ns, "link", "set", inner, "address", self.macs[host])
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/{SUBNET.prefixlen}", "dev", inner)
            sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "netns", "exec", ns, "ethtool", "-K", inner, "tx", "off")  # TCP across netdev needs it
            sh("ip", "link", "set", outer, "up")
            self._add_port(switch, outer, port)
        else:  # a trunk between two switches: a veth pair (OVS's patch ports crash its RSTP on netdev)
            (_, pa), (_, pb) = self.ends[link.name]
            sh("ip", "link", "add", pa, "type", "veth", "peer", "name", pb)
            self.trunks.append(pa)
            for node, (switch, port, device) in ports.items():
                sh("ip", "link", "set", device, "up")
                self._add_port(switch, device, port)

    # -- link conditions ------------------------------------------------------------------------
    def shape(self, link: str, mbps: float) -> None:
        """Each sending end of the link carries at most `mbps` (an HTB class, replaced in place)."""
        rate = f"{max(mbps, 0.001) * 1000:.0f}kbit"
        for ns, dev in self.ends[link]:
            tc = ("tc", "-n", ns) if ns else ("tc",)
            if dev not in self._htb:
                sh(*tc, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1")
                self._htb.add(dev)
            sh(*tc, "class", "replace", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate,
               "quantum", "1514")

    def delay(self, link: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """Latency (and jitter) on every sending end: netem under the HTB class; needs the kernel's netem."""
        for ns, dev in self.ends[link]:
            tc = ("tc", "-n", ns) if ns else ("tc",)
            if delay_ms > 0 or jitter_ms > 0:
                sh(*tc, "qdisc", "replace", "dev", dev, "parent", "1:1", "handle", "10:", "netem", "delay",
                   f"{delay_ms:.3f}ms", f"{jitter_ms:.3f}ms", "limit", "100000")
            else:
                sh(*tc, "qdisc", "del", "dev", dev, "parent", "1:1", "handle", "10:", check=False)

    def set_up(self, link: str, up: bool) -> None:
        """Carrier on or off for the whole link (its root-namespace end; the peer follows)."""
        sh("ip", "link", "set", self.ends[link][0][1], "up" if up else "down")

    def set_loss(self, losses: dict[str, float]) -> None:
        """Lossy links drop in the path: nftables on the switch ports' egress hook, one table for the
        lab, replaced as a whole. Towards a host the drop sits on its switch port; from a host, on
        every other port of its switch (matched by the host's MAC), so a packet is judged once per
        lossy link it crosses and losses compound along a path. Trunks drop on both ends."""
        rules: dict[str, list[str]] = {}
        for link, loss in sorted(losses.items()):
            if loss <= 0:
                continue
            drop = f"numgen random mod 10000 < {round(loss * 10000)} counter drop"
            ports = self.ports[link]
            if len(self.ends[link]) == 2 and self.ends[link][1][0] is not None:  # host link
                (host, (switch, _, outer)), = ports.items()
                rules.setdefault(outer, []).append(drop)
                for other in self._switch_devices(switch) - {outer}:
                    rules.setdefault(other, []).append(f"ether saddr {self.macs[host]} {drop}")
            else:
                for _, dev in self.ends[link]:
                    rules.setdefault(dev, []).append(drop)
        table = f"flopynet_{self.prefix}"
        text = [f"table netdev {table} {{}}", f"delete table netdev {table}"]
        if rules:
            text.append(f"table netdev {table} {{")
            for i, (dev, lines) in enumerate(sorted(rules.items())):
                text += [f"  chain c{i} {{", f"    type filter hook egress device {dev} priority 0", *[f"    {r}" for r in lines],
                         "  }"]
            text.append("}")
        proc = subprocess.run([_tool("nft"), "-f", "-"], input="\n".join(text) + "\n", capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nft: {proc.stderr.strip()}")

    def _switch_devices(self, switch: str) -> set[str]:
        return {dev for ports in self.ports.values() for node, (sw, _, dev) in ports.items() if sw == switch}

    # -- running things -------------------------------------------------------------------------
    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """A process inside the host's namespace; stopped at teardown."""
        proc = subprocess.Popen([_tool("ip"), "netns", "exec", self.ns(host), *argv], start_new_session=True, **kwargs)
        self.processes.append(proc)
        self._record()
        return proc

    def run(self, host: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([_tool("ip"), "netns", "exec", self.ns(host), *argv], capture_output=True, text=True,
                              timeout=timeout)

    # -- teardown -------------------------------------------------------------------------------
    def stop(self) -> None:
        for bridge in self.bridges.values():  # while ovs-vswitchd still runs, so it removes its tap devices
            if self.daemons:
                self.vsctl("--if-exists", "del-br", bridge, check=False)
        for proc in [*self.processes, *reversed(self.daemons)]:
            _kill(proc.pid)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        sh("nft", "delete", "table", "netdev", f"flopynet_{self.prefix}", check=False)
        for port in [*self.trunks, *self.bridges.values()]:  # veth pairs, and taps a killed daemon left
            sh("ip", "link", "del", port, check=False)
        for ns in self.namespaces.values():
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        (STATE_DIR / f"{self.prefix}.json").unlink(missing_ok=True)
        self.processes, self.daemons = [], []

    def adopt(self, proc: subprocess.Popen) -> None:
        """A process started elsewhere (the Ryu controller) that the lab stops and cleanup kills."""
        self.processes.append(proc)
        self._record()

    def _record(self) -> None:
        """What this lab made, for `flopynet cleanup` after a crash."""
        STATE_DIR.mkdir(exist_ok=True)
        (STATE_DIR / f"{self.prefix}.json").write_text(json.dumps({
            "owner": os.getpid(), "namespaces": list(self.namespaces.values()), "links": [*self.trunks, *self.bridges.values()],
            "run_dir": str(self.run_dir),
            "pids": [p.pid for p in [*self.processes, *self.daemons]]}))

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _close(proc: subprocess.Popen) -> None:
    for pipe in (proc.stdin, proc.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass


def _prefix(worker: str, label: str) -> str:
    """fn + 4 hex digits from worker, label and process, bumped past prefixes in use."""
    import hashlib
    taken = {p.stem for p in STATE_DIR.glob("*.json")} if STATE_DIR.is_dir() else set()
    for attempt in range(1000):
        digest = hashlib.sha1(f"{worker}:{label}:{os.getpid()}:{attempt}".encode()).hexdigest()
        prefix = f"fn{digest[:4]}"
        if prefix not in taken and not Path("/sys/class/net", f"{prefix}o0").exists():
            return prefix
    return f"fn{secrets.token_hex(2)}"


def _kill(pid: int) -> None:
    """The process group the lab started (a process and its children)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except OSError:
        return False


def leftovers() -> list[str]:
    """Everything of any lab that exists now, found by its names rather than by state files: lab
    records, namespaces, links, nftables tables, and agent, Ryu and Open vSwitch processes."""
    import re
    found = [f"record {p}" for p in sorted(STATE_DIR.glob("*.json"))] if STATE_DIR.is_dir() else []
    ours = re.compile(r"^fn[0-9a-f]{4}")
    found += [f"namespace {n}" for n in sh("ip", "netns", "list", check=False).stdout.split() if ours.match(n)]
    found += [f"link {n.split('@')[0]}" for line in sh("ip", "-o", "link", check=False).stdout.splitlines()
              for n in line.split(":")[1:2] if ours.match(n.strip())]
    found += [f"nftables table {t}" for t in sh("nft", "list", "tables", check=False).stdout.split() if t.startswith("flopynet_")]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        text = " ".join(argv)
        if "pytest_flopynet.network.agent" in text or "ryu_app.py" in text or "flopynet-ovs-" in text:
            if "State:\tZ" not in (proc / "status").read_text(errors="replace"):
                found.append(f"process {proc.name}: {text.strip()[:100]}")
    return found


def cleanup() -> list[str]:
    """Remove what labs of dead runs left: their processes, namespaces, links and OVS run
    directories. Labs whose owning process still runs (another xdist worker, another session) are
    left alone. Returns what it removed."""
    removed = []
    for state_file in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []:
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # being written by a live lab
        if _alive(state.get("owner", 0)):
            continue
        for pid in state.get("pids", []):
            _kill(pid)
        for ns in state.get("namespaces", []):
            if sh("ip", "netns", "del", ns, check=False).returncode == 0:
                removed.append(f"namespace {ns}")
        for link in state.get("links", []):
            if sh("ip", "link", "del", link, check=False).returncode == 0:
                removed.append(f"link {link}")
        if sh("nft", "delete", "table", "netdev", f"flopynet_{state_file.stem}", check=False).returncode == 0:
            removed.append(f"nftables table flopynet_{state_file.stem}")
        if Path(state.get("run_dir", "")).is_dir():
            shutil.rmtree(state["run_dir"], ignore_errors=True)
            removed.append(f"Open vSwitch run directory {state['run_dir']}")
        state_file.unlink(missing_ok=True)
    return removed


_NETEM: bool | None = None


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (tried once, in a scratch namespace)."""
    global _NETEM
    if _NETEM is None:
        ns = f"fnprobe{os.getpid()}"
        if sh("ip", "netns", "add", ns, check=False).returncode != 0:
            return False
        try:
            _NETEM = sh("tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                        check=False).returncode == 0
        finally:
            sh("ip", "netns", "del", ns, check=False)
    return _NETEM


BACKGROUND_SHARE = 0.1  # with traffic_prioritization, non-FL traffic may use this share of a switch's slowest link


class NetnsNetwork:
    """The Backend on a NetnsLab under the project's Ryu app: every flow is a real TCP connection
    between the transfer agents (network/agent.py) of two namespaces, timed where its last byte
    arrives; conditions are HTB rates, nftables drop rules, links down and stopped agents.

    Time: the clock is a WallClock. With time_scale s, links run at s times their bandwidth (and
    1/s their delay) so that a transfer's real duration times s is the scenario's (time
    dilation); the machine's forwarding capacity bounds the bandwidth times s it can honour."""

    name = "netns"

    def __init__(self, clock, controller, worker: str = "main", options: dict | None = None):
        from .agent import BULK_PORT, FL_PORT
        self.clock, self.controller, self.worker = clock, controller, worker
        self.options = dict(options or {})
        self.scale = float(getattr(clock, "time_scale", 1.0))
        self.fl_port, self.bulk_port = FL_PORT, BULK_PORT
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
    def unsupported(self, events) -> str | None:
        from ..model import EventType
        reason = unavailable()
        if reason:
            return reason
        for event in events:
            if event.event_type == EventType.NETWORK_LATENCY_INCREASE and not netem_available():
                return (f"{event.event_type} at {event.trigger_time:g} s needs the kernel's netem qdisc, which this "
                        f"kernel lacks (tc: 'Specified qdisc kind is unknown'); run it on the sim backend")
        return None

    def build(self, topology: Topology) -> None:
        from ..controller.ryu_controller import RyuController, ryu_python
        reason = unavailable()
        if reason:
            raise UnavailableError(reason)
        ryu_python()
        if self.controller.controller_type != "ryu":
            import warnings
            warnings.warn(f"controller_type {self.controller.controller_type!r}: the netns backend runs the project's "
                          f"Ryu app (the only controller it has) in its place", stacklevel=2)
        self.topology = topology
        self.lab = lab = NetnsLab(topology, self.worker, label=str(self.options.get("label", "scenario")))
        try:
            slowest = {s: min(topology.links[n].bw_mbps for n in topology.links_of(s)) for s in topology.switches}
            plan = lab.write_plan(lab.run_dir / "plan.json", fl_port=self.fl_port,
                                  prioritize=bool(self.controller.traffic_prioritization),
                                  background_kbps={s: bw * self.scale * 1000 * BACKGROUND_SHARE for s, bw in slowest.items()},
                                  stats_file=str(lab.run_dir / "stats.json"), stats_interval=0.5)
            self.ryu = RyuController(plan)
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
        import selectors
        proc = self.lab.popen(host, [sys.executable, "-m", "pytest_flopynet.network.agent",
                                     "--ports", f"{self.fl_port},{self.bulk_port}"],
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
            pings = {h: subprocess.Popen([_tool("ip"), "netns", "exec", lab.ns(h), "ping", "-n", "-c", "1", "-W", "1",
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
            _close(proc)
        if self.ryu is not None:
            self.ryu.stop()
            self.ryu = None
        if self.lab is not None:
            self.lab.stop()
            self.lab = None

    # -- conditions -----------------------------------------------------------------------------
    def apply(self, condition) -> int:
        from .backend import check_names
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
        from .backend import link_states
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
                _kill(proc.pid)
                proc.wait()
                _close(proc)
            for fid, (flow, _) in list(self._inflight.items()):
                if host in (flow.src, flow.dst):
                    del self._inflight[fid]
        for host in sorted(self._down_hosts - down):
            self._start_agent(host)
        self._down_hosts = down

    def reachable(self, src: str, dst: str) -> bool:
        return self.controller.route(src, dst) is not None

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
        import selectors
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
        import heapq
        from .backend import Flow
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
        from .backend import NetworkStats
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
        up = [d for d in per_link.values() if d["up"]] or list(per_link.values())
        return NetworkStats(latency_ms=sum(d["latency_ms"] for d in up) / len(up),
                            bandwidth_utilization=sum(d["utilization"] for d in per_link.values()) / len(per_link),
                            packet_loss=sum(d["loss"] for d in up) / len(up), links=per_link)
