"""The FL node program: the FL server or one client as its own OS process, exchanging model weights
over TCP. The emulated backends start it inside network namespaces (and GNS3 nodes), so it takes its
whole configuration from a JSON file and its command line, never from a parent's memory:

    python -m pytest_flopynet.fl.node --config node.json --role server --listen 10.0.0.1:0
    python -m pytest_flopynet.fl.node --config node.json --role client --name client_1 --server 10.0.0.1:7000

node.json: {"scenario": <the scenario as in a scenario file>, "seed": N, "data_dir": null}.
The server writes one JSON line per happening to stdout ("listening" with its port, "joined",
"round" with the round's metrics, "client_lost", "done"), which is how the orchestrator follows it.

Wire format, little-endian: a frame is b"FN", version (u8), kind (u8), payload length (u32), payload.
HELLO: the client's name (UTF-8). MODEL: round (u32), then the flat float32 parameters. UPDATE:
round (u32), samples (u32), local steps (u32), train loss (f64), then float32 parameters. DONE: empty.
"""
from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import by_client_number, client_number, from_dict, rule_spec, to_dict
from .cluster import FLCluster
from .executors import Update

MAGIC, VERSION = b"FN", 1
HELLO, MODEL, UPDATE, DONE = 1, 2, 3, 4
HEADER = struct.Struct("<2sBBI")
MODEL_HEAD = struct.Struct("<I")
UPDATE_HEAD = struct.Struct("<IIId")
MAX_PAYLOAD = 1 << 31


class ConnectionBroken(Exception):
    """The peer closed the connection or sent something that is not a frame."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, len(payload)) + payload


def encode_model(round_number: int, params: torch.Tensor) -> bytes:
    return frame(MODEL, MODEL_HEAD.pack(round_number) + params.detach().to(torch.float32).numpy().astype("<f4").tobytes())


def encode_update(round_number: int, samples: int, steps: int, loss: float, params: torch.Tensor) -> bytes:
    head = UPDATE_HEAD.pack(round_number, samples, steps, loss)
    return frame(UPDATE, head + params.detach().to(torch.float32).numpy().astype("<f4").tobytes())


def _vector(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, dtype="<f4").astype(np.float32))


def decode(kind: int, payload: bytes) -> dict:
    if kind == HELLO:
        return {"kind": "hello", "name": payload.decode("utf-8")}
    if kind == MODEL:
        (rnd,) = MODEL_HEAD.unpack_from(payload)
        return {"kind": "model", "round": rnd, "params": _vector(payload[MODEL_HEAD.size:])}
    if kind == UPDATE:
        rnd, samples, steps, loss = UPDATE_HEAD.unpack_from(payload)
        return {"kind": "update", "round": rnd, "samples": samples, "steps": steps, "loss": loss,
                "params": _vector(payload[UPDATE_HEAD.size:])}
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
    if rule_spec(node.scenario.fl_config.aggregation_method).control_variates:
        raise SystemExit(f"node: {node.scenario.fl_config.aggregation_method} needs control variates exchanged "
                         "with the model; the node program does not carry them yet")
    return FLCluster(node.scenario, node.seed, node.data_dir, executor="sequential")


def run_server(node: NodeConfig, listen: tuple[str, int], join_timeout: float = 60.0,
               round_timeout: float | None = None) -> int:
    """Wait for every client to say hello, then run the scenario's rounds over the sockets."""
    cluster = _cluster(node)
    fl = node.scenario.fl_config
    expected = set(node.scenario.client_names)
    server = socket.create_server(listen)
    emit(event="listening", host=listen[0], port=server.getsockname()[1])
    server.settimeout(join_timeout)
    peers: dict[str, socket.socket] = {}
    try:
        while set(peers) != expected:
            conn, _ = server.accept()
            conn.settimeout(join_timeout)
            hello = receive(conn)
            if hello["kind"] != "hello" or hello["name"] not in expected:
                conn.close()
                continue
            conn.settimeout(None)
            peers[hello["name"]] = conn
            emit(event="joined", client=hello["name"])
    except TimeoutError:
        emit(event="join_timeout", missing=sorted(expected - set(peers)))
    timeout = round_timeout or fl.round_timeout_seconds or 600.0
    for rnd in range(1, fl.total_rounds + 1):
        start = time.time()
        chosen = cluster.select(by_client_number(peers), fl.clients_per_round, rnd)
        message = encode_model(rnd, cluster.global_params)
        sent = []
        for name in chosen:
            try:
                peers[name].sendall(message)
                sent.append(name)
            except OSError as exc:
                _lost(peers, name, exc)
        updates, waiting = [], {peers[n]: n for n in sent if n in peers}
        with selectors.DefaultSelector() as sel:
            for conn in waiting:
                sel.register(conn, selectors.EVENT_READ)
            while waiting and time.time() - start < timeout:
                for key, _ in sel.select(timeout=max(0.0, timeout - (time.time() - start))):
                    name = waiting.pop(key.fileobj)
                    sel.unregister(key.fileobj)
                    try:
                        msg = receive(key.fileobj)
                    except (ConnectionBroken, OSError) as exc:
                        _lost(peers, name, exc)
                        continue
                    if msg["kind"] == "update" and msg["round"] == rnd:
                        updates.append(Update(name, msg["params"], msg["samples"], msg["loss"], msg["steps"]))
        updates.sort(key=lambda u: client_number(u.client))
        aggregated = len(updates) >= rule_spec(fl.aggregation_method).minimum_updates(fl.aggregation_parameters)
        if aggregated:
            cluster.aggregate(updates)
        accuracy, loss = cluster.evaluate()
        nbytes = cluster.model_bytes
        emit(event="round", round=rnd, participants=[u.client for u in updates],
             stragglers=sorted(set(sent) - {u.client for u in updates}), accuracy=accuracy, loss=loss,
             bytes_down=nbytes * len(sent), bytes_up=nbytes * len(updates), aggregated=aggregated,
             wall_seconds=time.time() - start)
    for name, conn in list(peers.items()):
        try:
            conn.sendall(frame(DONE))
        except OSError:
            pass
        conn.close()
    server.close()
    emit(event="done", rounds=fl.total_rounds)
    return 0


def _lost(peers: dict, name: str, exc: Exception) -> None:
    conn = peers.pop(name, None)
    if conn is not None:
        conn.close()
    emit(event="client_lost", client=name, reason=str(exc) or type(exc).__name__)


def run_client(node: NodeConfig, name: str, server: tuple[str, int], connect_timeout: float = 60.0) -> int:
    """Say hello, then train on every model the server sends until it says done."""
    if name not in node.scenario.client_names:
        raise SystemExit(f"node: {name!r} is not a client of scenario {node.scenario.name!r}")
    cluster = _cluster(node)
    deadline = time.time() + connect_timeout
    while True:
        try:
            sock = socket.create_connection(server, timeout=5)
            break
        except OSError as exc:
            if time.time() > deadline:
                print(f"node {name}: cannot reach the server at {server[0]}:{server[1]}: {exc}", file=sys.stderr)
                return 3
            time.sleep(0.2)
    sock.settimeout(None)
    sock.sendall(frame(HELLO, name.encode("utf-8")))
    try:
        while True:
            msg = receive(sock)
            if msg["kind"] == "done":
                return 0
            if msg["kind"] != "model":
                continue
            cluster.global_params = msg["params"]
            (update,) = cluster.train([name], msg["round"])
            sock.sendall(encode_update(msg["round"], update.num_samples, update.steps, update.train_loss,
                                       update.params))
    except (ConnectionBroken, OSError) as exc:
        print(f"node {name}: connection to the server broke: {exc}", file=sys.stderr)
        return 3
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_flopynet.fl.node", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="node.json: the scenario, seed and data folder")
    p.add_argument("--role", choices=["server", "client"], required=True)
    p.add_argument("--name", help="the client's name (client_<n>)")
    p.add_argument("--listen", default="127.0.0.1:0", help="server: HOST:PORT to listen on (port 0: any)")
    p.add_argument("--server", help="client: the server's HOST:PORT")
    p.add_argument("--join-timeout", type=float, default=60.0, help="server: seconds to wait for every client")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    node = NodeConfig.load(Path(args.config))
    if args.role == "server":
        return run_server(node, _address(args.listen), join_timeout=args.join_timeout)
    if not args.name or not args.server:
        p.error("a client needs --name and --server")
    return run_client(node, args.name, _address(args.server))


if __name__ == "__main__":
    sys.exit(main())
