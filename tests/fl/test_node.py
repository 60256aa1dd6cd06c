"""The FL node program as real processes on loopback: a server and clients exchanging weights over
TCP, per-round metrics on the server's stdout, and a client that dies mid-run."""
import json
import subprocess
import sys
import time

import pytest
import torch

from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig
from pytest_flopynet.fl.node import (DONE, HEADER, MODEL, ConnectionBroken, NodeConfig, decode, encode_model,
                                     encode_update, frame)

CONFIG = ScenarioConfig(name="nodes", duration_minutes=10,
                        fl_config=FLConfig(model_architecture="logreg", total_rounds=3, clients_per_round=3,
                                           local_epochs=2, learning_rate=0.2, client_data_sizes=[120, 120, 120]),
                        network_config=NetworkConfig(node_count=4))


def test_wire_format_round_trips_bit_for_bit():
    params, control = torch.randn(1000), torch.randn(1000)
    task = {"work": 0.5, "tampers": [["scaling", {"scale": 3.0}]]}
    raw = encode_model(7, params, task)
    magic, version, kind, length = HEADER.unpack_from(raw)
    meta = len(json.dumps(task))  # round, task length, vector count, the task, then 4 bytes per weight
    assert (magic, version, kind, length) == (b"FN", 3, MODEL, 4 + 4 + 1 + meta + 4 * 1000)
    msg = decode(kind, raw[HEADER.size:])
    assert msg["round"] == 7 and msg["task"] == task and torch.equal(msg["params"], params) and msg["control"] is None
    raw = encode_model(7, params, task, control)  # SCAFFOLD: c after the model, twice the bytes
    assert HEADER.unpack_from(raw)[3] == 4 + 4 + 1 + meta + 8 * 1000
    msg = decode(MODEL, raw[HEADER.size:])
    assert torch.equal(msg["params"], params) and torch.equal(msg["control"], control)
    raw = encode_update(3, 120, 8, 0.25, params, seconds=1.5)
    msg = decode(raw[3], raw[HEADER.size:])
    assert (msg["round"], msg["samples"], msg["steps"], msg["loss"], msg["seconds"]) == (3, 120, 8, 0.25, 1.5)
    assert torch.equal(msg["params"], params) and msg["control_delta"] is None
    raw = encode_update(3, 120, 8, 0.25, params, 1.5, control)
    msg = decode(raw[3], raw[HEADER.size:])
    assert torch.equal(msg["params"], params) and torch.equal(msg["control_delta"], control)
    assert decode(DONE, b"") == {"kind": "done"} and frame(DONE) == b"FN\x03\x04\x00\x00\x00\x00"
    with pytest.raises(ConnectionBroken, match="unknown message kind 9"):
        decode(9, b"")


def node(config_path, *args):
    return subprocess.Popen([sys.executable, "-m", "pytest_flopynet.fl.node", "--config", str(config_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start(tmp_path):
    path = NodeConfig.write(tmp_path / "node.json", CONFIG, seed=5)
    server = node(path, "--role", "server", "--listen", "127.0.0.1:0", "--join-timeout", "15")
    listening = json.loads(server.stdout.readline())
    assert listening["event"] == "listening" and listening["host"] == "127.0.0.1"
    address = f"127.0.0.1:{listening['port']}"
    clients = {f"client_{i}": node(path, "--role", "client", "--name", f"client_{i}", "--server", address)
               for i in (1, 2, 3)}
    return server, clients


def records(server, timeout=120):
    out, _ = server.communicate(timeout=timeout)
    return [json.loads(line) for line in out.splitlines()]


def test_server_and_clients_train_over_tcp(tmp_path):
    server, clients = start(tmp_path)
    lines = records(server)
    assert server.returncode == 0
    assert sorted(r["client"] for r in lines if r["event"] == "joined") == ["client_1", "client_2", "client_3"]
    rounds = [r for r in lines if r["event"] == "round"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["participants"] == ["client_1", "client_2", "client_3"] and r["aggregated"] for r in rounds)
    logreg_bytes = 4 * (64 * 10 + 10)
    assert rounds[0]["bytes_down"] == rounds[0]["bytes_up"] == 3 * logreg_bytes
    assert rounds[-1]["accuracy"] > 0.6 and rounds[-1]["loss"] < rounds[0]["loss"]
    assert lines[-1] == {"event": "done", "rounds": 3}
    for c in clients.values():
        assert c.wait(timeout=60) == 0


def test_a_client_that_dies_is_reported_and_the_others_go_on(tmp_path):
    server, clients = start(tmp_path)
    deadline = time.time() + 60
    while clients["client_2"].poll() is None and time.time() < deadline:
        clients["client_2"].kill()  # dies after joining, before or during its first update
        time.sleep(0.05)
    lines = records(server)
    assert server.returncode == 0
    lost = [r for r in lines if r["event"] in ("client_lost", "join_timeout")]
    assert lost, lines
    rounds = [r for r in lines if r["event"] == "round"]
    assert len(rounds) == 3 and all("client_2" not in r["participants"] for r in rounds[1:])
    assert all(r["participants"] for r in rounds[1:])  # the other two carried on
    for name in ("client_1", "client_3"):
        assert clients[name].wait(timeout=60) == 0


def test_a_client_that_stops_reading_cannot_hold_the_round_past_its_deadline(tmp_path):
    """A 68 MB model (MLP [4096, 4096] on digits: 17 million float32) fills any socket buffer, so sending it
    to a client that never reads blocks: the round still ends at its deadline with the other client's
    update, the silent client a straggler whose connection is closed."""
    import socket
    import threading as _threading

    from pytest_flopynet.fl.node import HELLO, Server

    big = ScenarioConfig(name="big", duration_minutes=10,
                         fl_config=FLConfig(model_architecture="mlp", model_parameters={"hidden_layers": [4096, 4096]},
                                            total_rounds=1, clients_per_round=2, local_epochs=1, learning_rate=0.1,
                                            client_data_sizes=[60, 60]),
                         network_config=NetworkConfig(node_count=3))
    path = NodeConfig.write(tmp_path / "node.json", big, seed=1)
    server = Server(NodeConfig.load(path), ("127.0.0.1", 0))
    port = server.listener.getsockname()[1]
    honest = node(path, "--role", "client", "--name", "client_1", "--server", f"127.0.0.1:{port}")
    silent = socket.create_connection(("127.0.0.1", port))
    silent.sendall(frame(HELLO, b"client_2"))  # says hello, then never reads
    try:
        server.wait_for_clients(60)
        assert set(server.peers) == {"client_1", "client_2"}
        result = {}
        worker = _threading.Thread(target=lambda: result.update(server.round(1, ["client_2", "client_1"], 8.0)))
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the round hung on the client that does not read"
        assert result["participants"] == ["client_1"] and result["stragglers"] == ["client_2"]
        assert 8.0 <= result["wall_seconds"] < 20.0
        assert "client_2" not in server.peers  # closed mid-frame: it would have to say hello again
        assert result["bytes_down"] == 4 * (64 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10)  # client_1's
    finally:
        silent.close()
        server.close()
        honest.wait(timeout=60)


def test_a_round_saved_but_never_reported_is_rewound_on_restart(tmp_path):
    """A server killed between saving round 3 and reporting it (round 2 was lost: the server was down): the
    orchestrator's records call round 3 lost too, so the restarted server, told that round 1 was the last
    it reported, goes back to round 1's model (kept in the state file for this) instead of training on
    from a model the records never saw."""
    from pytest_flopynet.fl.node import Server
    path = NodeConfig.write(tmp_path / "node.json", CONFIG, seed=5)
    state = tmp_path / "server.state"
    server = Server(NodeConfig.load(path), ("127.0.0.1", 0), state)
    address = f"127.0.0.1:{server.listener.getsockname()[1]}"
    clients = [node(path, "--role", "client", "--name", f"client_{i}", "--server", address) for i in (1, 2, 3)]
    try:
        server.wait_for_clients(60)
        first = server.round(1, ["client_1", "client_2", "client_3"], 60.0)
        after_first = torch.load(state, weights_only=False)
        third = server.round(3, ["client_1", "client_2", "client_3"], 60.0)
    finally:
        server.close()
        for c in clients:
            c.wait(timeout=60)
    assert first["aggregated"] and third["aggregated"] and first["accuracy"] != third["accuracy"]
    restarted = Server(NodeConfig.load(path), ("127.0.0.1", 0), state)  # what the state file says: round 3
    try:
        assert restarted.rounds_done == 3
        restarted.rewind(3)  # round 3 was reported: nothing to undo
        assert restarted.rounds_done == 3 and not torch.equal(restarted.cluster.global_params, after_first["params"])
        restarted.rewind(1)  # it was not
        assert restarted.rounds_done == 1 and torch.equal(restarted.cluster.global_params, after_first["params"])
        assert restarted.cluster.evaluate() == (first["accuracy"], first["loss"])
    finally:
        restarted.close()
    again = Server(NodeConfig.load(path), ("127.0.0.1", 0), state)  # the rewind is saved
    try:
        assert again.rounds_done == 1 and torch.equal(again.cluster.global_params, after_first["params"])
    finally:
        again.close()
