"""The transfer agent: one process inside each host's namespace that moves the backend's flows as
real TCP connections. It takes orders on stdin and reports on stdout, one JSON object per line:

    {"op": "send", "id": 7, "host": "10.77.0.2", "port": 7100, "bytes": 1600000}
    {"op": "flood", "id": 8, "host": "10.77.0.1", "port": 7200}   (until "stop")
    {"op": "stop", "id": 8}

    {"ev": "ready", "ports": [7100, 7200]}
    {"ev": "received", "id": 7, "bytes": 1600000, "t": <time.monotonic() at the last byte>}
    {"ev": "failed", "id": 7, "reason": "..."}            (reported by the sender)

Each flow is its own connection (set-up, slow start and all), as a model download or upload is.
A connection starts with a header, b"FB" + flow id (u64) + byte count (u64, 0 for a flood), then
the bytes; the receiver reports the time the last byte arrived. Two listening ports: FL traffic
on the first, everything else (floods) on the second, so the controller can tell them apart.
Standard library only: it starts in a fraction of a second in every namespace.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct("<2sQQ")
MAGIC = b"FB"
CHUNK = bytes(256 * 1024)
FL_PORT, BULK_PORT = 7100, 7200

_out = threading.Lock()


def report(**record) -> None:
    with _out:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def _receive(conn: socket.socket) -> None:
    with conn:
        head = b""
        while len(head) < HEADER.size:
            part = conn.recv(HEADER.size - len(head))
            if not part:
                return
            head += part
        magic, flow, nbytes = HEADER.unpack(head)
        if magic != MAGIC:
            return
        got = 0
        while nbytes == 0 or got < nbytes:
            part = conn.recv(1 << 20)
            if not part:
                break
            got += len(part)
        if nbytes and got == nbytes:
            report(ev="received", id=flow, bytes=got, t=time.monotonic())


def _congested(sock: socket.socket, cc: str | None) -> socket.socket:
    """The socket with congestion control cc (None: the namespace's); accepted sockets inherit the listener's."""
    if cc:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    return sock


def _listen(address: str, port: int, cc: str | None = None) -> socket.socket:
    server = _congested(socket.create_server((address, port), backlog=128), cc)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_receive, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return server


class Sender:
    def __init__(self, cc: str | None = None) -> None:
        self.cc = cc
        self.stopped: dict[int, threading.Event] = {}

    def start(self, order: dict) -> None:
        stop = self.stopped[order["id"]] = threading.Event()
        threading.Thread(target=self._send, args=(order, stop), daemon=True).start()

    def stop(self, flow: int) -> None:
        event = self.stopped.pop(flow, None)
        if event is not None:
            event.set()

    def _send(self, order: dict, stop: threading.Event) -> None:
        flow, nbytes = order["id"], int(order.get("bytes", 0))
        try:
            # the handshake does not depend on the congestion control: set once connected
            with _congested(socket.create_connection((order["host"], order["port"]), timeout=order.get("timeout", 600)),
                            self.cc) as sock:
                if stop.is_set():  # stopped while connecting (a partition healed after the flow was given up)
                    return
                sock.settimeout(0.1)  # wake up now and then to see a stop order
                sock.sendall(HEADER.pack(MAGIC, flow, nbytes))
                left = nbytes if nbytes else None
                view = memoryview(CHUNK)
                while not stop.is_set() and (left is None or left > 0):
                    size = len(CHUNK) if left is None else min(left, len(CHUNK))
                    try:
                        sent = sock.send(view[:size])
                    except socket.timeout:
                        continue
                    if left is not None:
                        left -= sent
                if stop.is_set():  # abandoned: reset the connection, dropping what is still queued
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    sock.shutdown(socket.SHUT_WR)
                    sock.settimeout(order.get("timeout", 600))
                    sock.recv(1)  # the receiver closes after the last byte: a clean end of the flow
        except OSError as exc:
            if not stop.is_set():
                report(ev="failed", id=flow, reason=str(exc) or type(exc).__name__)
        finally:
            self.stopped.pop(flow, None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_flopynet.network.agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default="0.0.0.0")
    p.add_argument("--ports", default=f"{FL_PORT},{BULK_PORT}", help="FL port and bulk port")
    p.add_argument("--congestion-control", help="TCP congestion control of every connection (cubic, bbr, reno)")
    args = p.parse_args(argv)
    ports = [int(x) for x in args.ports.split(",")]
    servers = [_listen(args.address, port, args.congestion_control) for port in ports]
    report(ev="ready", ports=[s.getsockname()[1] for s in servers])
    sender = Sender(args.congestion_control)
    for line in sys.stdin:
        order = json.loads(line)
        if order["op"] in ("send", "flood"):
            sender.start(order)
        elif order["op"] == "stop":
            sender.stop(order["id"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
