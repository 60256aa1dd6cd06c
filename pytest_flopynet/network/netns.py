"""A topology made real on this machine: a network namespace per host, an Open vSwitch bridge per
switch on OVS's userspace datapath (no kernel module needed), veth pairs for host links and
switch-to-switch trunks, one IPv4 subnet for all hosts.

The lab runs its own ovsdb-server and ovs-vswitchd (private run directory, database and sockets),
so it never touches a system Open vSwitch. Every name carries the lab's prefix (per xdist worker and
process), and every lab records what it made in a state file, so `flopynet cleanup` can remove what
a crashed run left behind, as `mn -c` does for Mininet. Until the Ryu controller takes over, the
bridges are learning switches and RSTP keeps trunk loops (mesh) from flooding.

This is the ground the netns backend stands on; routing by the Ryu controller, events on real links
and the Backend protocol come on top of it.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import UnavailableError
from .topology import Topology

STATE_DIR = Path(tempfile.gettempdir()) / "flopynet-netns"
SUBNET = ipaddress.ip_network("10.77.0.0/16")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
TOOLS = ("ip", "ethtool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovsdb-tool")


def unavailable() -> str | None:
    """Why this machine cannot build a lab, or None."""
    if os.geteuid() != 0:
        return "the netns backend needs root (CAP_NET_ADMIN) to make namespaces and links"
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        return f"the netns backend needs {', '.join(missing)} (Debian: apt-get install iproute2 ethtool openvswitch-switch)"
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

    def __init__(self, topology: Topology, worker: str = "main", controller: str | None = None):
        """controller: an OpenFlow target such as tcp:127.0.0.1:6653; the bridges then speak
        OpenFlow 1.3 in secure fail mode (no traffic without the controller's flows)."""
        reason = unavailable()
        if reason:
            raise UnavailableError(reason)
        self.topology = topology
        # interface names are at most 15 characters: keep the prefix short, unique per worker and process
        self.prefix = f"fn{secrets.token_hex(2)}"
        self.worker = worker
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"flopynet-ovs-{self.prefix}-"))
        self.daemons: list[subprocess.Popen] = []
        self.processes: list[subprocess.Popen] = []
        hosts = sorted(topology.hosts)
        self.addresses = {h: str(SUBNET[i + 1]) for i, h in enumerate(hosts)}
        self.namespaces = {h: f"{self.prefix}-{h}" for h in hosts}
        self.bridges = {s: f"{self.prefix}{s}" for s in topology.switches}
        self.trunks: list[str] = []  # the root-namespace ends of every veth pair
        self.controller = controller

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
                if self.controller:
                    self.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev",
                               "fail_mode=secure", "protocols=OpenFlow13", "--", "set-controller", bridge,
                               self.controller)
                else:  # standalone: a learning switch; RSTP breaks trunk loops
                    self.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev",
                               "fail_mode=standalone", f"rstp_enable={'true' if self._loops() else 'false'}")
            for i, link in enumerate(sorted(self.topology.links.values(), key=lambda link: link.name)):
                self._link(i, link)
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

    def _link(self, index: int, link) -> None:
        a_host, b_host = link.a in self.namespaces, link.b in self.namespaces
        if a_host or b_host:
            host, switch = (link.a, link.b) if a_host else (link.b, link.a)
            outer, inner = f"{self.prefix}o{index}", f"{self.prefix}i{index}"
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            self.trunks.append(outer)  # deleted at teardown with its peer (namespace removal is lazy)
            sh("ip", "link", "set", inner, "netns", self.ns(host))
            ns = self.ns(host)
            sh("ip", "-n", ns, "link", "set", inner, "name", f"eth{index}")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/{SUBNET.prefixlen}", "dev", f"eth{index}")
            sh("ip", "-n", ns, "link", "set", f"eth{index}", "up")
            sh("ip", "netns", "exec", ns, "ethtool", "-K", f"eth{index}", "tx", "off")  # TCP across netdev needs it
            sh("ip", "link", "set", outer, "up")
            self.vsctl("add-port", self.bridges[switch], outer)
        else:  # a trunk between two switches: a veth pair (OVS's patch ports crash its RSTP on netdev)
            pa, pb = f"{self.prefix}t{index}a", f"{self.prefix}t{index}b"
            sh("ip", "link", "add", pa, "type", "veth", "peer", "name", pb)
            self.trunks.append(pa)
            for port, switch in ((pa, link.a), (pb, link.b)):
                sh("ip", "link", "set", port, "up")
                self.vsctl("add-port", self.bridges[switch], port)

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
        for port in [*self.trunks, *self.bridges.values()]:  # veth pairs, and taps a killed daemon left
            sh("ip", "link", "del", port, check=False)
        for ns in self.namespaces.values():
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        (STATE_DIR / f"{self.prefix}.json").unlink(missing_ok=True)
        self.processes, self.daemons = [], []

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
        if Path(state.get("run_dir", "")).is_dir():
            shutil.rmtree(state["run_dir"], ignore_errors=True)
            removed.append(f"Open vSwitch run directory {state['run_dir']}")
        state_file.unlink(missing_ok=True)
    return removed
