"""The nodes executor: the FL server and every client as processes of the FL node program (fl/node.py),
each in its host's network namespace on netns (on loopback on sim), so that serialization, TCP,
timeouts, crashes and slow starts are real. The orchestrator keeps scenario time, events and client
selection; the server process runs each round it is asked for (--control) and reports what it
measured, which becomes the round's record."""
from __future__ import annotations

import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

from .. import cgroups
from ..errors import FlopynetError
from ..model import ScenarioConfig
from .node import NodeConfig

NODE_PORT = 7300  # the FL server's port on netns (the plan's FL port: Ryu's priority queues match it)
START_TIMEOUT = 120.0  # seconds for the server to listen and every client to say hello (torch imports)


class NodeError(FlopynetError):
    """A node process failed in a way the run cannot go on from (the server died, or never listened)."""


class ServerKilled(Exception):
    """The server's output ended because a server failure event killed it."""


class NodeProcesses:
    """The server and client processes of one run. `backend` places them: spawn(host, argv, **popen)
    runs argv in the host's namespace and address(host) is where others reach it."""

    def __init__(self, backend, config: ScenarioConfig, seed: int, data_dir: Path | None, folder: Path | None):
        """`folder` keeps the processes' configuration, logs and state files; None: a temporary one,
        removed by stop()."""
        self.backend, self.config = backend, config
        self._temporary = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="flopynet-nodes-")) if folder is None else Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.node_json = NodeConfig.write(self.folder / "node.json", config, seed, data_dir)
        self.server_host = backend.topology.server
        self.server: subprocess.Popen | None = None
        self.clients: dict[str, subprocess.Popen] = {}
        self.address: str | None = None
        self.lines: list[dict] = []  # everything the server said, in order (tests and the log read it)
        self._seen = 0  # lines of it looked at by _read_until
        self._buffer = b""
        self.port = NODE_PORT if backend.carries_node_traffic else 0
        self.server_killed = False  # by kill_server (a server failure event), not by itself
        self.kills = 0  # server failures so far: a round during which one happened is lost
        self.last: dict | None = None  # the last round's record (a lost round keeps its figures)
        self.reported = 0  # the last round the server reported: a restarted server rewinds a round saved after it
        self.quotas: dict[str, list] = {}  # client -> the CPU quotas (cgroups) in force on its process
        self.sleep_factors: dict[str, list[float]] = {}  # the same where the kernel has no quotas

    # -- processes ------------------------------------------------------------------------------
    def _node(self, host: str, state: str, *args: str) -> list[str]:
        """The node program's command line for a process on `host`, keeping its state in the file `state`;
        a backend whose hosts have their own file systems (GNS3's containers) places the files itself."""
        place = getattr(self.backend, "node_argv", None)
        if place is not None:
            return place(host, self.node_json, state, list(args))
        return [sys.executable, "-m", "pytest_flopynet.fl.node", "--config", str(self.node_json), *args,
                "--state", str(self.folder / state)]

    def start(self) -> None:
        """The server, then every client; returns once all have said hello."""
        self.start_server()
        for name in self.config.client_names:
            self.start_client(name, wait=False)
        joined = set()
        self._read_until(lambda line: line["event"] == "joined" and joined.add(line["client"]) is None
                         and joined >= set(self.config.client_names), START_TIMEOUT, "every client said hello")

    def start_server(self) -> None:
        """The server (again, after kill_server: it resumes from its state file)."""
        listen = f"{self.backend.address(self.server_host)}:{self.port}"
        with open(self.folder / "server.log", "ab") as log:
            self.server = self.backend.spawn(self.server_host, self._node(
                self.server_host, "server.state", "--role", "server", "--control", "--listen", listen),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self._buffer, self.server_killed = b"", False
        line = self._read_until(lambda line: line["event"] == "listening", START_TIMEOUT, "the server listened")
        self.address = f"{line['host']}:{line['port']}"
        self.port = line["port"]
        living = {c for c, proc in self.clients.items() if proc.poll() is None}
        if living and not self.backend.carries_node_traffic:  # sim: the clients are back before time moves on
            back = set()
            self._read_until(lambda line: line["event"] == "joined" and back.add(line["client"]) is None
                             and back >= living, START_TIMEOUT, "the clients reconnected")

    def start_client(self, name: str, wait: bool | None = None) -> None:
        """The client's process (again, after kill_client: from its last received model). `wait` (default
        where scenario time is virtual, on sim) returns once it said hello; on netns its slow start is real."""
        with open(self.folder / f"{name}.log", "ab") as log:
            self.clients[name] = self.backend.spawn(name, self._node(
                name, f"{name}.state", "--role", "client", "--name", name, "--server", self.address,
                "--connect-timeout", "600"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        for quota in self.quotas.get(name, ()):  # a restarted client is as limited as before
            quota.add(self.clients[name].pid)
        if wait if wait is not None else not self.backend.carries_node_traffic:
            if self.address is not None and self.server is not None and not self.server_killed:
                self._read_until(lambda line: line["event"] == "joined" and line["client"] == name, START_TIMEOUT,
                                 f"{name} said hello")

    def kill_client(self, name: str) -> int | None:
        """SIGKILL to the client's process group (a crash: no goodbye); its PID."""
        return _kill(self.clients.get(name))

    def limit_cpu(self, name: str, factor: float) -> Callable[[], None]:
        """The client's process gets 1/factor of one CPU (a cgroup CPU quota) until the returned undo runs.
        Only where the processes' time is the scenario's (netns); on sim the network model's device time
        already has the slowdown. Where the kernel has no quota, the client sleeps factor - 1 times its
        training instead (its task says so), with a warning saying why."""
        if not self.backend.carries_node_traffic:
            return lambda: None
        if hasattr(self.backend, "limit_cpu"):  # containers: the backend's own CPU limit
            return self.backend.limit_cpu(name, factor)
        reason = cgroups.unavailable()
        if reason is not None:
            warnings.warn(f"resource_constraint on {name}: no CPU quota ({reason}); the client process sleeps "
                          f"{factor - 1:g} times its training time instead", stacklevel=2)
            self.sleep_factors.setdefault(name, []).append(factor)
            return lambda: self.sleep_factors[name].remove(factor)
        quota = cgroups.CpuQuota(f"{os.getpid()}-{id(self):x}-{name}-{len(self.quotas.get(name, ()))}", factor)
        self.quotas.setdefault(name, []).append(quota)
        proc = self.clients.get(name)
        if proc is not None and proc.poll() is None:
            quota.add(proc.pid)

        def undo() -> None:
            self.quotas[name].remove(quota)
            quota.remove()
        return undo

    def kill_server(self) -> int | None:
        self.server_killed, self.kills = True, self.kills + 1
        return _kill(self.server)

    def pid(self, name: str) -> int | None:
        proc = self.server if name == self.server_host else self.clients.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def stop(self) -> None:
        """Asks the server to finish (it tells the clients), then kills whatever is left."""
        if self.server is not None and self.server.poll() is None:
            try:
                self.server.stdin.write(b'{"op": "done"}\n')
                self.server.stdin.flush()
                self.server.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for proc in [self.server, *self.clients.values()]:
            _kill(proc)
        for quota in [q for quotas in self.quotas.values() for q in quotas]:
            quota.remove()
        self.quotas.clear()
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- rounds ---------------------------------------------------------------------------------
    def round(self, rnd: int, clients: list[str], timeout: float, tasks: dict | None = None,
              waiting: Callable[[], float] = lambda: 0.5, policy: dict | None = None) -> dict:
        """Runs round `rnd` with these clients on the server, at most `timeout` seconds (the server's
        own clock), screening their updates under `policy` (a Policy's fields); the server's round record.
        `waiting()` runs while it waits (the orchestrator fires events due) and returns the seconds until it
        next needs to run."""
        kills = self.kills
        if self.server_killed:  # down: nothing reaches it
            return self._lost(rnd, clients)
        if self.server is None or self.server.poll() is not None:
            raise NodeError(f"the FL server process is not running (exit code {self.server and self.server.returncode})")
        tasks = {c: dict(task) for c, task in (tasks or {}).items()}
        for c in clients:  # CPU limits without a kernel quota: the client sleeps them
            if self.sleep_factors.get(c):
                tasks.setdefault(c, {})["slowdown"] = math.prod(self.sleep_factors[c])
        command = {"op": "round", "round": rnd, "clients": clients, "timeout": timeout, "tasks": tasks,
                   "policy": policy, "reported": self.reported}
        try:
            self.server.stdin.write((json.dumps(command) + "\n").encode())
            self.server.stdin.flush()
            self.last = self._read_until(lambda line: line["event"] == "round" and line["round"] == rnd,
                                         timeout + 60, f"round {rnd} ended", waiting)
            self.reported = rnd
            return self.last
        except (ServerKilled, BrokenPipeError):
            if self.kills == kills:
                raise NodeError("the FL server process ended mid-round") from None
            return self._lost(rnd, clients)

    def _lost(self, rnd: int, clients: list[str]) -> dict:
        """A round the server did not live through (a server failure event): every update lost, the model
        (and its figures) the last round's; None before the first round (the initial model's)."""
        return {"event": "round", "round": rnd, "participants": [], "stragglers": [], "failed": list(clients),
                "accuracy": self.last and self.last["accuracy"], "loss": self.last and self.last["loss"],
                "bytes_down": 0, "bytes_up": 0, "aggregated": False, "flags": None, "times": {}}

    def _read_until(self, done: Callable[[dict], bool], timeout: float, what: str,
                    waiting: Callable[[], float] = lambda: 0.5) -> dict:
        end, server = time.monotonic() + timeout, self.server
        with selectors.DefaultSelector() as sel:
            sel.register(server.stdout, selectors.EVENT_READ)
            while True:
                while self._seen < len(self.lines):  # each line once, in order, across calls
                    line, self._seen = self.lines[self._seen], self._seen + 1
                    if done(line):
                        return line
                left = end - time.monotonic()
                if left <= 0:
                    raise NodeError(f"the FL server did not report that {what} within {timeout:.0f} s "
                                    f"(see {self.folder / 'server.log'})")
                if sel.select(timeout=max(0.0, min(left, waiting(), 0.5))):
                    data = os.read(server.stdout.fileno(), 1 << 16)
                    if not data and (self.server_killed or server is not self.server):
                        raise ServerKilled()
                    if not data:
                        raise NodeError(f"the FL server process ended (exit code {self.server.wait()}) before "
                                        f"{what} (see {self.folder / 'server.log'})")
                    *complete, self._buffer = (self._buffer + data).split(b"\n")
                    for raw in complete:
                        if raw.strip():
                            self.lines.append(json.loads(raw))


def _kill(proc: subprocess.Popen | None) -> int | None:
    if proc is None or proc.poll() is not None:
        return None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return proc.pid


def nodes_unsupported(backend, config: ScenarioConfig) -> str | None:
    """Why the nodes executor cannot run this scenario on this backend (a skip reason), or None."""
    if not hasattr(backend, "spawn"):
        return (f"the nodes executor starts the FL processes on the sim, netns and gns3 backends; the {backend.name} "
                "backend does not start them")
    return None
