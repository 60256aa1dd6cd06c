"""The FL node program: the FL server or one client as its own OS process, exchanging model weights
over TCP. The emulated backends start it inside network namespaces (and GNS3 nodes), so it takes its
whole configuration from a JSON file and its command line, never from a parent's memory:

    python -m pytest_flopynet.fl.node --config node.json --role server --listen 10.0.0.1:0 [--control]
    python -m pytest_flopynet.fl.node --config node.json --role client --name client_1 --server 10.0.0.1:7000

node.json: {"scenario": <the scenario as in a scenario file>, "seed": N, "data_dir": null}.
The server writes one JSON line per happening to stdout ("listening" with its port, "joined",
"round" with the round's metrics, "client_lost", "done"), which is how the orchestrator follows it.
Alone it runs the scenario's rounds itself; with --control it runs the rounds the orchestrator asks
for on stdin ({"op": "round", "round": r, "clients": [...], "timeout": s, "tasks": {...}, "policy": {...},
"reported": r0}, then {"op": "done"}), so that events, selection, policies and scenario time stay the
orchestrator's. With --state the server keeps its round and model (and the round before) in a file
after every round and a restarted server resumes from it, rewinding a round it saved but never
reported; a client keeps its last received model (and SCAFFOLD's c_i) the same way, and reconnects
when the server goes.

Wire format, little-endian: a frame is b"FN", version (u8), kind (u8), payload length (u32), payload.
HELLO: the client's name (UTF-8). MODEL: round (u32), task length (u32), vectors (u8), the task (JSON:
the client's attacks in force, share of its local steps and device seconds), then the flat float32
parameters (and SCAFFOLD's server control variate c, as long, where vectors is 2). UPDATE: round (u32),
samples (u32), local steps (u32), train loss (f64), training seconds (f64), vectors (u8), then float32
parameters (and SCAFFOLD's c_i+ - c_i). DONE: empty.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import selectors
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import by_client_number, from_dict, rule_spec, to_dict
from ..policy import Policy, flag_updates
from .attacks import Tamper
from .cluster import FLCluster
from .executors import Update

MAGIC, VERSION = b"FN", 3
HELLO, MODEL, UPDATE, DONE = 1, 2, 3, 4
HEADER = struct.Struct("<2sBBI")
MODEL_HEAD = struct.Struct("<IIB")  # round, task length, vectors (2: SCAFFOLD's control variate follows)
UPDATE_HEAD = struct.Struct("<IIIddB")
MAX_PAYLOAD = 1 << 31


class ConnectionBroken(Exception):
    """The peer closed the connection or sent something that is not a frame."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, len(payload)) + payload


def _floats(params: torch.Tensor) -> bytes:
    return params.detach().to(torch.float32).numpy().astype("<f4").tobytes()


def encode_model(round_number: int, params: torch.Tensor, task: dict | None = None,
                 control: torch.Tensor | None = None) -> bytes:
    """The global model and the client's task; for SCAFFOLD the server's control variate c after it."""
    meta = json.dumps(task or {}).encode("utf-8")
    vectors = [params] if control is None else [params, control]
    return frame(MODEL, MODEL_HEAD.pack(round_number, len(meta), len(vectors)) + meta + b"".join(map(_floats, vectors)))


def encode_update(round_number: int, samples: int, steps: int, loss: float, params: torch.Tensor,
                  seconds: float = 0.0, control_delta: torch.Tensor | None = None) -> bytes:
    """The trained model; for SCAFFOLD the client's control-variate difference c_i+ - c_i after it."""
    vectors = [params] if control_delta is None else [params, control_delta]
    return frame(UPDATE, UPDATE_HEAD.pack(round_number, samples, steps, loss, seconds, len(vectors))
                 + b"".join(map(_floats, vectors)))


def _vectors(data: bytes, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model and, where the frame has two vectors, the control variate (same length) after it."""
    floats = torch.from_numpy(np.frombuffer(data, dtype="<f4").astype(np.float32))
    if count == 1:
        return floats, None
    if count != 2 or len(floats) % 2:
        raise ConnectionBroken(f"a frame of {count} vectors in {len(floats)} floats")
    half = len(floats) // 2
    return floats[:half], floats[half:]


def decode(kind: int, payload: bytes) -> dict:
    if kind == HELLO:
        return {"kind": "hello", "name": payload.decode("utf-8")}
    if kind == MODEL:
        rnd, size, count = MODEL_HEAD.unpack_from(payload)
        task = json.loads(payload[MODEL_HEAD.size:MODEL_HEAD.size + size] or b"{}")
        params, control = _vectors(payload[MODEL_HEAD.size + size:], count)
        return {"kind": "model", "round": rnd, "task": task, "params": params, "control": control}
    if kind == UPDATE:
        rnd, samples, steps, loss, seconds, count = UPDATE_HEAD.unpack_from(payload)
        params, delta = _vectors(payload[UPDATE_HEAD.size:], count)
        return {"kind": "update", "round": rnd, "samples": samples, "steps": steps, "loss": loss,
                "seconds": seconds, "params": params, "control_delta": delta}
    if kind == DONE:
        return {"kind": "done"}
    raise ConnectionBroken(f"unknown message kind {kind}")


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionBroken("connection closed by the peer")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> dict:
    magic, version, kind, length = HEADER.unpack(_read_exactly(sock, HEADER.size))
    if magic != MAGIC or version != VERSION or length > MAX_PAYLOAD:
        raise ConnectionBroken(f"not a flopynet frame (magic {magic!r}, version {version})")
    return decode(kind, _read_exactly(sock, length))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"node: address {text!r}: expected HOST:PORT")
    return host, int(port)


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


@dataclass
class NodeConfig:
    scenario: object  # ScenarioConfig
    seed: int
    data_dir: Path | None

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        scenario = from_dict(data["scenario"], str(path))
        return cls(scenario, int(data.get("seed", 0)), Path(data["data_dir"]) if data.get("data_dir") else None)

    @staticmethod
    def write(path: Path, scenario, seed: int, data_dir: Path | None = None) -> Path:
        Path(path).write_text(json.dumps({"scenario": to_dict(scenario), "seed": seed,
                                          "data_dir": str(data_dir) if data_dir else None}), encoding="utf-8")
        return Path(path)


def _cluster(node: NodeConfig):
    return FLCluster(node.scenario, node.seed, node.data_dir, executor="sequential")


def _save(path: Path | None, state: dict) -> None:
    """Written whole, then renamed: a process killed while saving leaves the previous state."""
    if path is not None:
        torch.save(state, f"{path}.tmp")
        Path(f"{path}.tmp").replace(path)


def _load(path: Path | None) -> dict | None:
    return torch.load(path, weights_only=False) if path is not None and Path(path).is_file() else None


class Server:
    """The FL server's sockets and model: clients say hello (and again after a restart of either side),
    and a round sends each chosen client the model and its task and aggregates what returns in time."""

    def __init__(self, node: NodeConfig, listen: tuple[str, int], state: Path | None = None):
        self.node, self.fl, self.state = node, node.scenario.fl_config, state
        self.cluster = _cluster(node)
        self.expected = set(node.scenario.client_names)
        self.rounds_done, self.previous = 0, None
        saved = _load(state)
        if saved is not None:  # a restarted server goes on from its last round
            self.rounds_done, self.previous = saved["round"], saved.get("previous")
            self.cluster.global_params, self.cluster.server_state = saved["params"], saved["server_state"]
        self.listener = socket.create_server(listen)
        self.listener.setblocking(False)
        self.peers: dict[str, socket.socket] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "listener")
        emit(event="listening", host=listen[0], port=self.listener.getsockname()[1])
        if saved is not None:
            emit(event="resumed", round=self.rounds_done)

    # -- connections ---------------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        conn.settimeout(10)
        try:
            hello = receive(conn)
        except (ConnectionBroken, OSError):
            conn.close()
            return
        if hello["kind"] != "hello" or hello["name"] not in self.expected:
            conn.close()
            return
        conn.settimeout(None)
        old = self.peers.pop(hello["name"], None)
        if old is not None:  # the client restarted: its new connection replaces the old one
            self.selector.unregister(old)
            old.close()
        self.peers[hello["name"]] = conn
        self.selector.register(conn, selectors.EVENT_READ, hello["name"])
        emit(event="joined", client=hello["name"])

    def rewind(self, reported: int) -> None:
        """The orchestrator heard of rounds up to `reported`. A later round saved but never reported (the
        server was killed between saving and reporting it, so the records call that round lost) is undone:
        the model goes back to the one the records say. The state file keeps the round before for this."""
        if self.rounds_done > reported and self.previous is not None and self.previous["round"] == reported:
            self.rounds_done = reported
            self.cluster.global_params, self.cluster.server_state = self.previous["params"], self.previous["server_state"]
            self.previous = None
            _save(self.state, {"round": reported, "params": self.cluster.global_params,
                               "server_state": self.cluster.server_state})
            emit(event="rewound", round=reported)

    def lose(self, name: str, reason: str) -> None:
        conn = self.peers.pop(name, None)
        if conn is not None:
            self.selector.unregister(conn)
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a send blocked on it (close alone does not)
            except OSError:
                pass
            conn.close()
            emit(event="client_lost", client=name, reason=reason)

    def serve(self, seconds: float, until=lambda: False, on_message=None) -> None:
        """Accept hellos and read clients for `seconds` or until `until()`; a message goes to on_message,
        a closed connection is a lost client (between rounds too)."""
        end = time.monotonic() + seconds
        while not until():
            left = end - time.monotonic()
            if left <= 0:
                return
            for key, _ in self.selector.select(timeout=min(left, 1.0)):
                if key.data == "listener":
                    self._accept()
                    continue
                if key.data == "stdin":
                    if on_message is not None:
                        on_message("stdin", None)
                    continue
                try:
                    msg = receive(key.fileobj)
                except (ConnectionBroken, OSError) as exc:
                    self.lose(key.data, str(exc) or type(exc).__name__)
                    continue
                if on_message is not None:
                    on_message(key.data, msg)

    def wait_for_clients(self, timeout: float) -> None:
        self.serve(timeout, until=lambda: set(self.peers) >= self.expected)
        if not set(self.peers) >= self.expected:
            emit(event="join_timeout", missing=sorted(self.expected - set(self.peers)))

    # -- a round -------------------------------------------------------------------------------
    def round(self, rnd: int, chosen: list[str], timeout: float, tasks: dict | None = None,
              policy: dict | None = None) -> dict:
        """Send the model to the chosen clients, wait up to `timeout` seconds for their updates, screen them
        under `policy` (the orchestrator's active one: its detector drops flagged updates), aggregate and
        evaluate; the round's record (with the screening's flags, per participant, for the orchestrator's
        policy engine to book). A chosen client without a connection, or whose connection
        breaks, failed; one that did not answer in time is a straggler. Each model goes out on a thread
        of its own, so a client the network cut off cannot hold the others' models back; one whose model
        is still not through at the deadline is a straggler, its connection closed mid-frame (it says hello
        again)."""
        start, tasks = time.monotonic(), tasks or {}
        control = self.cluster.server_state.get("c") if self.cluster.rule.control_variates else None
        failed, began, senders, send_errors = [], {}, {}, {}

        def send(name: str, conn: socket.socket, message: bytes) -> None:
            try:
                conn.sendall(message)
            except OSError as exc:
                send_errors[name] = exc
        for name in chosen:
            conn = self.peers.get(name)
            if conn is None:
                failed.append(name)
                continue
            began[name] = time.monotonic()
            senders[name] = threading.Thread(target=send, args=(name, conn, encode_model(
                rnd, self.cluster.global_params, tasks.get(name), control)), daemon=True)
            senders[name].start()
        updates, times = {}, {}

        def on_message(name, msg):
            if msg and msg["kind"] == "update" and msg["round"] == rnd and name in began and name not in updates:
                updates[name] = Update(name, msg["params"], msg["samples"], msg["loss"], msg["steps"],
                                       msg["control_delta"])
                total = time.monotonic() - began[name]
                times[name] = {"seconds": total, "train_seconds": msg["seconds"],
                               "transfer_seconds": max(0.0, total - msg["seconds"])}
        waiting = lambda: [n for n in senders if n not in updates and n in self.peers]  # noqa: E731
        self.serve(timeout, until=lambda: not waiting(), on_message=on_message)
        undelivered = [n for n, thread in senders.items() if thread.is_alive()]
        for name in undelivered:
            self.lose(name, "its model was not through by the round's deadline")  # ends the blocked send
        for name, thread in senders.items():
            thread.join()
            if name in send_errors:
                self.lose(name, str(send_errors[name]) or type(send_errors[name]).__name__)
        failed += [n for n in senders if n not in updates and n not in self.peers and n not in undelivered]
        got = [updates[n] for n in by_client_number(updates)]
        flags = flag_updates(Policy(**policy), [u.params for u in got], self.cluster.global_params) if policy else None
        accepted = [u for u, flagged in zip(got, flags or [False] * len(got)) if not flagged]
        aggregated = len(accepted) >= rule_spec(self.fl.aggregation_method).minimum_updates(self.fl.aggregation_parameters)
        self.previous = {"round": self.rounds_done, "params": self.cluster.global_params,
                         "server_state": copy.deepcopy(self.cluster.server_state)}
        if aggregated:
            self.cluster.aggregate(accepted)
        accuracy, loss = self.cluster.evaluate()
        self.rounds_done = rnd
        _save(self.state, {"round": rnd, "params": self.cluster.global_params, "server_state": self.cluster.server_state,
                           "previous": self.previous})
        nbytes = self.cluster.transfer_bytes
        delivered = [n for n in senders if n not in undelivered and n not in send_errors]
        record = dict(event="round", round=rnd, participants=[u.client for u in got],
                      stragglers=by_client_number(set(senders) - set(updates) - set(failed)),
                      failed=by_client_number(failed), accuracy=accuracy, loss=loss,
                      bytes_down=nbytes * len(delivered), bytes_up=nbytes * len(got), aggregated=aggregated,
                      flags=flags, wall_seconds=time.monotonic() - start, times=times)
        emit(**record)
        return record

    def close(self) -> None:
        for name, conn in list(self.peers.items()):
            try:
                conn.sendall(frame(DONE))
            except OSError:
                pass
            conn.close()
        self.listener.close()
        emit(event="done", rounds=self.rounds_done)


def run_server(node: NodeConfig, listen: tuple[str, int], join_timeout: float = 60.0,
               round_timeout: float | None = None, state: Path | None = None) -> int:
    """Alone: wait for every client to say hello, then run the scenario's rounds over the sockets."""
    server = Server(node, listen, state)
    server.wait_for_clients(join_timeout)
    fl = node.scenario.fl_config
    timeout = round_timeout or fl.round_timeout_seconds or 600.0
    for rnd in range(server.rounds_done + 1, fl.total_rounds + 1):
        server.round(rnd, server.cluster.select(by_client_number(server.peers), fl.clients_per_round, rnd), timeout)
    server.close()
    return 0


def run_controlled(node: NodeConfig, listen: tuple[str, int], state: Path | None = None) -> int:
    """Under an orchestrator: run the rounds it asks for on stdin, a JSON line each, until "done" or
    the end of stdin; meanwhile accept (re)connecting clients."""
    server = Server(node, listen, state)
    commands: list[dict] = []
    buffer = b""
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    server.selector.register(stdin, selectors.EVENT_READ, "stdin")
    closed = False

    def on_message(name, msg):
        nonlocal buffer, closed
        if name != "stdin":
            return
        data = os.read(stdin.fileno(), 1 << 16)
        if not data:
            closed = True
            server.selector.unregister(stdin)
            return
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        commands.extend(json.loads(line) for line in lines if line.strip())

    while True:
        server.serve(math.inf, until=lambda: bool(commands) or closed, on_message=on_message)
        if not commands:  # stdin closed: the orchestrator is gone
            break
        command = commands.pop(0)
        if command["op"] == "done":
            break
        server.selector.unregister(stdin)  # a round reads only clients; the next command waits
        server.rewind(int(command.get("reported", server.rounds_done)))
        server.round(command["round"], list(command["clients"]), float(command["timeout"]), command.get("tasks"),
                     command.get("policy"))
        server.selector.register(stdin, selectors.EVENT_READ, "stdin")
    server.close()
    return 0


def run_client(node: NodeConfig, name: str, server: tuple[str, int], connect_timeout: float = 60.0,
               state: Path | None = None) -> int:
    """Say hello, then train on every model the server sends until it says done; on a broken connection
    (the server restarted) say hello again, for up to connect_timeout seconds."""
    if name not in node.scenario.client_names:
        raise SystemExit(f"node: {name!r} is not a client of scenario {node.scenario.name!r}")
    cluster = _cluster(node)
    saved = _load(state)
    if saved is not None:  # restarted: from the last model it received (and its own SCAFFOLD c_i)
        cluster.global_params = saved["params"]
        if saved.get("control") is not None:
            cluster.control_variates[name] = saved["control"]
        print(f"node {name}: resumed from the model of round {saved['round']}", file=sys.stderr, flush=True)
    while True:
        sock = _connect(name, server, connect_timeout)
        if sock is None:
            return 3
        try:
            sock.sendall(frame(HELLO, name.encode("utf-8")))
            while True:
                msg = receive(sock)
                if msg["kind"] == "done":
                    return 0
                if msg["kind"] != "model":
                    continue
                cluster.global_params = msg["params"]
                if msg["control"] is None:  # SCAFFOLD's c: none before the server's first aggregation
                    cluster.server_state.pop("c", None)
                else:
                    cluster.server_state["c"] = msg["control"]
                _save(state, {"round": msg["round"], "params": msg["params"],
                              "control": cluster.control_variates.get(name)})
                task, began = msg["task"], time.monotonic()
                work = {name: task["work"]} if task.get("work") is not None else None
                tampers = {name: [Tamper(kind, params) for kind, params in task.get("tampers", [])]}
                (update,) = cluster.train([name], msg["round"], work, tampers)
                if task.get("slowdown", 1) > 1:  # a CPU limit where the kernel has no quota: train as slowly
                    time.sleep((task["slowdown"] - 1) * (time.monotonic() - began))
                # the scenario's device (client_compute_gflops): a host faster than it waits out the rest
                time.sleep(max(0.0, float(task.get("device_seconds") or 0.0) - (time.monotonic() - began)))
                delta = None
                if cluster.rule.control_variates:  # SCAFFOLD: the client keeps c_i+ and sends c_i+ - c_i
                    delta = cluster.advance_control_variate(update)
                    _save(state, {"round": msg["round"], "params": msg["params"],
                                  "control": cluster.control_variates[name]})
                sock.sendall(encode_update(msg["round"], update.num_samples, update.steps, update.train_loss,
                                           update.params, time.monotonic() - began, delta))
        except (ConnectionBroken, OSError) as exc:
            print(f"node {name}: connection to the server broke ({exc}); reconnecting", file=sys.stderr, flush=True)
        finally:
            sock.close()


def _connect(name: str, server: tuple[str, int], timeout: float) -> socket.socket | None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(server, timeout=5)
            sock.settimeout(None)
            return sock
        except OSError as exc:
            if time.monotonic() > deadline:
                print(f"node {name}: cannot reach the server at {server[0]}:{server[1]}: {exc}", file=sys.stderr)
                return None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_flopynet.fl.node", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="node.json: the scenario, seed and data folder")
    p.add_argument("--role", choices=["server", "client"], required=True)
    p.add_argument("--name", help="the client's name (client_<n>)")
    p.add_argument("--listen", default="127.0.0.1:0", help="server: HOST:PORT to listen on (port 0: any)")
    p.add_argument("--server", help="client: the server's HOST:PORT")
    p.add_argument("--join-timeout", type=float, default=60.0, help="server: seconds to wait for every client")
    p.add_argument("--connect-timeout", type=float, default=60.0, help="client: seconds to keep trying the server")
    p.add_argument("--control", action="store_true", help="server: run the rounds asked for on stdin")
    p.add_argument("--state", type=Path, help="file of the node's state: kept after every round, resumed from")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    node = NodeConfig.load(Path(args.config))
    if args.role == "server":
        if args.control:
            return run_controlled(node, _address(args.listen), args.state)
        return run_server(node, _address(args.listen), join_timeout=args.join_timeout, state=args.state)
    if not args.name or not args.server:
        p.error("a client needs --name and --server")
    return run_client(node, args.name, _address(args.server), args.connect_timeout, args.state)


if __name__ == "__main__":
    sys.exit(main())
