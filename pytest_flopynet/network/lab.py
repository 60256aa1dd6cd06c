"""A topology made real on this machine: a network namespace per host, an Open vSwitch bridge per
switch on OVS's userspace datapath (no kernel module needed), veth pairs for host links and
switch-to-switch trunks, one IPv4 subnet for all hosts.

The lab runs its own ovsdb-server and ovs-vswitchd (private run directory, database and sockets),
so it never touches a system Open vSwitch. The switches live in a namespace of their own (the
switch namespace: ovs-vswitchd, the switch ends of every veth, and the controller): the userspace
datapath makes one tap device, "ovs-netdev", per namespace, so two labs' switches in one namespace
would fight over it and the second lab would pass no traffic. Every name carries the lab's prefix (per xdist worker and
process), and every lab records what it made in a state file, so `flopynet cleanup` can remove what
a crashed run left behind, as `mn -c` does for Mininet. Until the Ryu controller takes over, the
bridges are learning switches and RSTP keeps trunk loops (mesh) from flooding.

Every host has a fixed MAC address, every switch a datapath id and every port a fixed OpenFlow
number, written to a plan file (`write_plan`) from which the project's Ryu app routes. Links are
shaped on each sending end (HTB: the switch side for traffic towards a host, the host side for
traffic from it, both ends of a trunk), and lossy links drop in the path with nftables on the
switch ports' egress hook. NetnsNetwork (network/netns.py) is the Backend on top of the lab.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from .. import cgroups
from ..errors import FlopynetError, UnavailableError
from ..processes import tool
from .topology import Topology

# Lab records, which `flopynet cleanup` acts on (as root): a private folder, in root's runtime
# location when root (no other user can create it first), refused unless it is ours and 0700.
STATE_DIR = (Path("/run/flopynet-netns") if os.geteuid() == 0 and Path("/run").is_dir()
             else Path(tempfile.gettempdir()) / f"flopynet-netns-{os.geteuid()}")
PREFIX = re.compile(r"^fn[0-9a-f]{4}$")
SUBNET = ipaddress.ip_network("10.77.0.0/16")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
TOOLS = ("ip", "tc", "nft", "ethtool", "sysctl", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovsdb-tool")


def unavailable() -> str | None:
    """Why this machine cannot build a lab, or None."""
    if os.geteuid() != 0:
        return "the netns backend needs root (CAP_NET_ADMIN) to make namespaces and links"
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        return (f"the netns backend needs {', '.join(missing)} "
                "(Debian: apt-get install iproute2 procps nftables ethtool openvswitch-switch)")
    if not OVS_SCHEMA.is_file():
        return f"Open vSwitch's schema is missing ({OVS_SCHEMA})"
    return None


def sh(*argv: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([tool(argv[0]), *argv[1:]], capture_output=True, text=True, env=env)
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
        self.switch_ns = f"{self.prefix}-sw-{tag}"  # ovs-vswitchd, the switch ends of the links, the controller
        self._switch_ns_made = False
        self.bridges = {s: f"{self.prefix}{s}" for s in topology.switches}
        self.dpids = {s: i + 1 for i, s in enumerate(sorted(topology.switches))}
        self.trunks: list[str] = []  # the switch-namespace ends of every veth pair
        self.controller = controller
        self.ends: dict[str, list[tuple[str, str]]] = {}  # link -> (namespace, device) of its sending ends
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
                self.ends[link.name] = [(self.switch_ns, outer), (self.ns(host), f"eth{i}")]
            else:
                pa, pb = f"{self.prefix}t{i}a", f"{self.prefix}t{i}b"
                self.ports[link.name] = {}
                for node, dev in ((link.a, pa), (link.b, pb)):
                    self.ports[link.name][node] = (node, next_port[node], dev)
                    next_port[node] += 1
                self.ends[link.name] = [(self.switch_ns, pa), (self.switch_ns, pb)]

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
    def switch_namespace(self) -> str:
        """The switch namespace, made on first use: a controller that the bridges reach on
        127.0.0.1 runs in it (`RyuController(..., netns=lab.switch_namespace())`)."""
        if not self._switch_ns_made:
            self._switch_ns_made = True
            self._record()
            sh("ip", "netns", "add", self.switch_ns)
            sh("ip", "-n", self.switch_ns, "link", "set", "lo", "up")
        return self.switch_ns

    def start(self) -> NetnsLab:
        try:
            self.switch_namespace()
            self._start_ovs()
            cc = self._congestion_control()
            for host, ns in self.namespaces.items():
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}", check=False)
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

    def _congestion_control(self) -> str:
        """The topology's TCP congestion control, which start() makes each host namespace's default (a
        per-namespace sysctl since Linux 4.15), so that every program started there uses it. The kernel lets
        a namespace other than the first choose only among net.ipv4.tcp_allowed_congestion_control; where
        the choice is not allowed the default stays the kernel's and the transfer agents set it on each
        socket (TCP_CONGESTION, which root may set to any available one)."""
        cc = self.topology.congestion_control
        have = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
        if cc not in have:
            raise UnavailableError(f"this kernel has no TCP congestion control {cc!r} (it has {', '.join(have)}; "
                                   f"modprobe tcp_{cc})")
        return cc

    def _loops(self) -> bool:
        switches = self.topology.graph.subgraph(self.topology.switches)
        return switches.number_of_edges() >= len(self.topology.switches)

    def _start_ovs(self) -> None:
        db, sock = self.run_dir / "conf.db", self.run_dir / "db.sock"
        sh("ovsdb-tool", "create", str(db), str(OVS_SCHEMA), env=self.env)
        self.daemons.append(subprocess.Popen(
            [tool("ovsdb-server"), str(db), f"--remote=punix:{sock}", f"--unixctl={self.run_dir / 'ovsdb.ctl'}",
             f"--pidfile={self.run_dir / 'ovsdb.pid'}", f"--log-file={self.run_dir / 'ovsdb.log'}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self._wait_for(sock)
        self.vsctl("--no-wait", "init")
        self.daemons.append(subprocess.Popen(
            [tool("ip"), "netns", "exec", self.switch_ns, tool("ovs-vswitchd"), f"unix:{sock}",
             f"--unixctl={self.run_dir / 'vswitchd.ctl'}",
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
            ns, inner, sw = self.ns(host), self.ends[link.name][1][1], self.switch_ns
            sh("ip", "-n", sw, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
            self.trunks.append(outer)  # deleted at teardown with its peer (namespace removal is lazy)
            sh("ip", "-n", ns, "link", "set", inner, "address", self.macs[host])
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/{SUBNET.prefixlen}", "dev", inner)
            sh("ip", "-n", ns, "link", "set", inner, "up")
            # transmit checksums off: TCP across OVS's netdev datapath needs it; segmentation off (GSO): the HTB
            # then shapes 1514-byte frames, not 64 kB super-packets it would let out on credit
            sh("ip", "netns", "exec", ns, "ethtool", "-K", inner, "tx", "off", "gso", "off")
            sh("ip", "-n", sw, "link", "set", outer, "up")
            self._add_port(switch, outer, port)
        else:  # a trunk between two switches: a veth pair (OVS's patch ports crash its RSTP on netdev)
            (_, pa), (_, pb) = self.ends[link.name]
            sh("ip", "-n", self.switch_ns, "link", "add", pa, "type", "veth", "peer", "name", pb)
            self.trunks.append(pa)
            for node, (switch, port, device) in ports.items():
                sh("ip", "-n", self.switch_ns, "link", "set", device, "up")
                self._add_port(switch, device, port)

    # -- link conditions ------------------------------------------------------------------------
    def shape(self, link: str, mbps: float) -> None:
        """Each sending end of the link carries at most `mbps` (an HTB class, replaced in place). Its bucket
        holds one frame or a millisecond at the rate, whichever is more (tc's default holds rate / HZ plus an
        MTU, and a bigger bucket lets a short transfer out faster than the rate); the quantum is one frame."""
        rate = f"{max(mbps, 0.001) * 1000:.0f}kbit"
        burst = f"{max(1600, round(mbps * 1e6 / 8 * 1e-3))}b"
        for ns, dev in self.ends[link]:
            tc = ("tc", "-n", ns)
            if dev not in self._htb:
                sh(*tc, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1")
                self._htb.add(dev)
            sh(*tc, "class", "replace", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate,
               "burst", burst, "cburst", burst, "quantum", "1514")

    def delay(self, link: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """Latency (and jitter) on every sending end: netem under the HTB class; needs the kernel's netem."""
        for ns, dev in self.ends[link]:
            tc = ("tc", "-n", ns)
            if delay_ms > 0 or jitter_ms > 0:
                sh(*tc, "qdisc", "replace", "dev", dev, "parent", "1:1", "handle", "10:", "netem", "delay",
                   f"{delay_ms:.3f}ms", f"{jitter_ms:.3f}ms", "limit", "100000")
            else:
                sh(*tc, "qdisc", "del", "dev", dev, "parent", "1:1", "handle", "10:", check=False)

    def set_up(self, link: str, up: bool) -> None:
        """Carrier on or off for the whole link (its switch-side end; the peer follows)."""
        ns, dev = self.ends[link][0]
        sh("ip", "-n", ns, "link", "set", dev, "up" if up else "down")

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
            if self.ends[link][1][0] != self.switch_ns:  # host link
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
        proc = subprocess.run([tool("ip"), "netns", "exec", self.switch_ns, tool("nft"), "-f", "-"],
                              input="\n".join(text) + "\n", capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nft: {proc.stderr.strip()}")

    def _switch_devices(self, switch: str) -> set[str]:
        return {dev for ports in self.ports.values() for node, (sw, _, dev) in ports.items() if sw == switch}

    # -- running things -------------------------------------------------------------------------
    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """A process inside the host's namespace; stopped at teardown."""
        proc = subprocess.Popen([tool("ip"), "netns", "exec", self.ns(host), *argv], start_new_session=True, **kwargs)
        self.processes.append(proc)
        self._record()
        return proc

    def run(self, host: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([tool("ip"), "netns", "exec", self.ns(host), *argv], capture_output=True, text=True,
                              timeout=timeout)

    # -- teardown -------------------------------------------------------------------------------
    def stop(self) -> None:
        for bridge in self.bridges.values():  # while ovs-vswitchd still runs, so it removes its tap devices
            if self.daemons:
                self.vsctl("--if-exists", "del-br", bridge, check=False)
        for proc in [*self.processes, *reversed(self.daemons)]:
            kill_group(proc.pid)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._switch_ns_made:  # its veth pairs, nftables table and taps go with it
            for port in self.trunks:
                sh("ip", "-n", self.switch_ns, "link", "del", port, check=False)
            sh("ip", "netns", "del", self.switch_ns, check=False)
        for ns in self.namespaces.values():
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        (state_dir() / f"{self.prefix}.json").unlink(missing_ok=True)
        self.processes, self.daemons = [], []

    def adopt(self, proc: subprocess.Popen) -> None:
        """A process started elsewhere (the Ryu controller) that the lab stops and cleanup kills."""
        self.processes.append(proc)
        self._record()

    def _record(self) -> None:
        """What this lab made, for `flopynet cleanup` after a crash; each process with its start time
        and command line, so a recycled PID is never signalled."""
        pids = [p.pid for p in [*self.processes, *self.daemons]]
        (state_dir() / f"{self.prefix}.json").write_text(json.dumps({
            "owner": os.getpid(), "owner_identity": identity(os.getpid()),
            "namespaces": [*self.namespaces.values(), self.switch_ns], "run_dir": str(self.run_dir),
            "pids": pids, "identities": {str(pid): identity(pid) for pid in pids}}))

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def close_pipes(proc: subprocess.Popen) -> None:
    for pipe in (proc.stdin, proc.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass


def state_dir() -> Path:
    """STATE_DIR, made private (0700) when missing; refused unless it is a real folder owned by this
    user that no one else can write (another user could plant records there)."""
    try:
        STATE_DIR.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(STATE_DIR)
    if not stat.S_ISDIR(info.st_mode):
        raise FlopynetError(f"refusing the lab state folder {STATE_DIR}: it is not a folder (a link or a file)")
    if info.st_uid != os.geteuid():
        raise FlopynetError(f"refusing the lab state folder {STATE_DIR}: owned by uid {info.st_uid}, not {os.geteuid()}")
    if info.st_mode & 0o077:
        raise FlopynetError(f"refusing the lab state folder {STATE_DIR}: mode {stat.S_IMODE(info.st_mode):o}, "
                            "others may write records (expected 700)")
    return STATE_DIR


def identity(pid: int) -> list | None:
    """[start time in clock ticks since boot, command line] of a live process, or None. A PID is
    reused after its process ends, its start time with it is not; the command line is kept for the
    record only (`ip netns exec` replaces it when it execs the program it starts)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        return None
    return [int(fields[19]), cmdline]  # field 22 of stat; the first two (pid, comm) were split off


def _prefix(worker: str, label: str) -> str:
    """fn + 4 hex digits from worker, label and process, bumped past prefixes in use."""
    taken = {p.stem for p in state_dir().glob("*.json")}
    for attempt in range(1000):
        digest = hashlib.sha1(f"{worker}:{label}:{os.getpid()}:{attempt}".encode()).hexdigest()
        prefix = f"fn{digest[:4]}"
        if prefix not in taken and not Path("/sys/class/net", f"{prefix}o0").exists():
            return prefix
    return f"fn{secrets.token_hex(2)}"


def kill_group(pid: int) -> None:
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
    return found + [f"cgroup {path}" for path in cgroups.leftovers()]


def record_problem(path: Path, state) -> str | None:
    """Why a lab record is not one a lab of this package wrote, or None: its name, its namespaces
    (under its prefix), its OVS run folder (this user's, where labs make them) and its processes."""
    prefix = path.stem
    if not PREFIX.match(prefix):
        return f"the name {path.name!r} is not a lab's"
    if not isinstance(state, dict) or not isinstance(state.get("owner"), int):
        return "no owner process"
    namespaces = state.get("namespaces")
    if not isinstance(namespaces, list) or not all(
            isinstance(ns, str) and re.fullmatch(rf"{prefix}-[A-Za-z0-9_.-]+", ns) for ns in namespaces):
        return f"namespaces not named {prefix}-...: {str(namespaces)[:200]}"
    run_dir = state.get("run_dir")
    if not isinstance(run_dir, str) or Path(run_dir).parent != Path(tempfile.gettempdir()) or \
            not Path(run_dir).name.startswith(f"flopynet-ovs-{prefix}-"):
        return f"run folder {str(run_dir)[:200]!r} is not one a lab makes"
    pids, identities = state.get("pids"), state.get("identities")
    if not isinstance(pids, list) or not all(isinstance(p, int) and p > 1 for p in pids) or \
            not isinstance(identities, dict):
        return "processes without their identities"
    return None


def _same(pid: int, recorded) -> bool:
    """Whether pid is still the process recorded (same start time)."""
    now = identity(pid)
    return bool(now and isinstance(recorded, list) and recorded and now[0] == recorded[0])


def _own_folder(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def cleanup() -> list[str]:
    """Remove what labs of dead runs left: their processes, namespaces (with the links and nftables
    table in them) and OVS run directories. Labs whose owning process still runs (another xdist
    worker, another session) are left alone, and so is anything a record names that this package's
    labs would not have made (a warning says which record and why). Returns what it removed."""
    removed = []
    for state_file in sorted(state_dir().glob("*.json")):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue  # being written by a live lab
        problem = record_problem(state_file, state)
        if problem:
            warnings.warn(f"ignoring lab record {state_file}: {problem}")
            continue
        owner = state["owner"]
        if _alive(owner) and (state.get("owner_identity") is None or _same(owner, state["owner_identity"])):
            continue
        for pid in state["pids"]:  # only the very process the lab started, not one that got its PID later
            if _same(pid, state["identities"].get(str(pid))):
                kill_group(pid)
        for ns in state["namespaces"]:  # the switch namespace takes its veths and nftables table along
            if sh("ip", "netns", "del", ns, check=False).returncode == 0:
                removed.append(f"namespace {ns}")
        if _own_folder(Path(state["run_dir"])):
            shutil.rmtree(state["run_dir"], ignore_errors=True)
            removed.append(f"Open vSwitch run directory {state['run_dir']}")
        state_file.unlink(missing_ok=True)
    return removed + cgroups.cleanup()  # the node processes' CPU quotas whose processes are gone


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
