"""FL across a real GNS3 topology: gns3-server 2.2 on 127.0.0.1 (its own virtual environment), Docker
nodes of the FL node image (`flopynet gns3 image`; built here when missing), uBridge links between them.

The round records come from the node programs inside the containers; the events' effects are read
back inside the nodes with this host's ping and iperf3 in the containers' network namespaces, and the
expected figures are worked out here from the conditions' numbers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pytest_flopynet.engine.clock import WallClock
from pytest_flopynet.errors import UnavailableError
from pytest_flopynet.network import build_topology, docker_nodes, gns3, make_backend, node_image
from pytest_flopynet.network.backend import Condition
from pytest_flopynet.network.gns3 import LinkFilters, LocalGNS3Server

requests = pytest.importorskip("requests")
pytest.importorskip("gns3fy", reason="the gns3 extra is not installed: pip install -e '.[gns3]'")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image():
    """The FL node image: $FLOPYNET_NODE_IMAGE, else this package's (built when missing: about 75 s)."""
    reason = docker_nodes.unavailable() or node_image.docker_unavailable()
    if reason:
        pytest.skip(reason)
    if os.environ.get(gns3.IMAGE_ENV):
        return os.environ[gns3.IMAGE_ENV]
    try:
        tag, seconds, built = node_image.build()
    except UnavailableError as exc:
        pytest.skip(str(exc))
    print(f"\n[gns3] FL node image {tag}: {'built in %.0f s' % seconds if built else 'cached'}")
    return tag


@pytest.fixture(scope="module")
def server(image):
    try:
        local = LocalGNS3Server().start()
    except UnavailableError as exc:
        pytest.skip(str(exc))
    yield local
    local.stop()


def projects(url: str) -> set[str]:
    return {p["project_id"] for p in requests.get(f"{url}/v2/projects", timeout=30).json()}


def containers(server: LocalGNS3Server) -> set[str]:
    """Containers of this test server's projects (their volumes are under its folder), running or not:
    other xdist workers' servers have containers of their own meanwhile."""
    ids = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True).stdout.split()
    if not ids:
        return set()
    mounts = subprocess.run(["docker", "inspect", "-f", "{{.Id}} {{range .Mounts}}{{.Source}} {{end}}", *ids],
                            capture_output=True, text=True).stdout
    return {line.split()[0] for line in mounts.splitlines() if str(server.home) in line}


# -- whole scenarios --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["custom_edge_scenario_ci", "basic_fl_training_ci"])
def test_a_ci_scenario_trains_across_gns3_links_within_0_05_of_the_simulation(name, server):
    from pytest_flopynet.discovery import builtin_folder, find_scenario
    from pytest_flopynet.session import Scenario
    scenario = find_scenario(name, [builtin_folder()])
    before_projects, before_containers = projects(server.url), containers(server)
    t0 = time.perf_counter()
    # time scale 10: the devices' 90-96 s rounds (client_compute_gflops) take 9-10 s each.
    # GNS3's links (uBridge in user space) carry a round's 26 MB slower than the model's 100 Mbit/s, and
    # slower still on a busy host: basic_fl_training_ci's rounds took 88-92 s on GNS3 here against 78.6 s
    # in the simulation, 90-100 s in CI (9 of its 10 rounds fitted its 15 minutes there) and 95-128 s with
    # another job busy beside the suite. The run gets twice its duration so that every round is judged.
    config = dataclasses.replace(scenario.config, duration_minutes=scenario.config.duration_minutes * 2)
    run = Scenario(config, seed=3, backend="gns3", backend_options={"gns3_url": server.url, "time_scale": 10})
    result = run.run()
    wall = time.perf_counter() - t0
    sim = Scenario(scenario.config, seed=3, backend="sim").run()
    rounds, sim_rounds = result.execution.metrics.rounds, sim.execution.metrics.rounds
    summary = result.analysis["execution_summary"]
    print(f"\n[gns3] {name}: {len(rounds)} rounds, final accuracy {rounds[-1].accuracy:.4f} "
          f"(sim {sim_rounds[-1].accuracy:.4f}), scenario {rounds[-1].end_time:.1f} s (sim {sim_rounds[-1].end_time:.1f}), "
          f"{wall:.1f} s wall")
    assert len(rounds) == scenario.config.fl_config.total_rounds == len(sim_rounds)
    assert abs(rounds[-1].accuracy - sim_rounds[-1].accuracy) <= 0.05
    # the nodes train at least as long as their devices would, so scenario time is at least the simulation's;
    # on top come GNS3's real transfers, whose time depends on the host's load (1.00-1.32x sim, above): the
    # upper bound catches a run whose time is not the devices' at all, not a slow host
    assert sim_rounds[-1].end_time * 0.95 <= rounds[-1].end_time <= sim_rounds[-1].end_time * 2
    # the records are the nodes' own: every participant's transfer and training time, bytes both ways
    for r in rounds:
        assert r.participants and set(r.client_times) >= set(r.participants)
        assert all(t["transfer_seconds"] > 0 and t["train_seconds"] > 0 for c, t in r.client_times.items()
                   if c in r.participants)
        assert r.bytes_down > 0 and r.bytes_up > 0
    assert summary["fl_rounds_completed"] == len(rounds)
    assert projects(server.url) == before_projects and containers(server) == before_containers


def test_network_instability_ci_on_gns3_shows_its_events_in_the_round_times(server):
    """The seed's network_instability at CI size (mesh of 4 switches, FedProx, four events) at time scale 10."""
    from pytest_flopynet.discovery import builtin_folder, find_scenario
    from pytest_flopynet.model import event_duration
    from pytest_flopynet.session import Scenario
    scenario = find_scenario("network_instability_ci", [builtin_folder()])
    run = Scenario(scenario.config, seed=0, backend="gns3", backend_options={"gns3_url": server.url, "time_scale": 10})
    result = run.run()
    rounds = result.execution.metrics.rounds
    fired = {str(e.event_type): e for e in scenario.config.events}
    assert not result.analysis["events_never_fired"]
    durations = [r.end_time - r.start_time for r in rounds]
    usual = sorted(durations)[len(durations) // 2]
    print("\n[gns3] network_instability_ci rounds (s): " + " ".join(f"{d:.0f}" for d in durations))

    def during(kind: str) -> list:
        e = fired[kind]
        end = e.trigger_time + event_duration(e)
        return [r for r in rounds if r.start_time < end and r.end_time > e.trigger_time]
    # latency (uBridge's delay filter: one frame per 3 ms) and 2% loss (TCP's retransmission timeouts are
    # real time, ten times longer in scenario time) each lengthen a round they fall in by 10 s or more.
    # The partition (45 s) shows only where it overlaps a model transfer (seen: +67 s in one run, +0 when it
    # fell in the clients' 84 s of training); the bandwidth limit (25 Mbit/s on the server's link) costs a
    # few seconds at most, as in the simulation (+5 s). Both fired (no event never fired, above).
    for kind in ("network_latency_increase", "network_packet_loss"):
        assert max(r.end_time - r.start_time for r in during(kind)) >= usual + 10, (kind, durations)
    assert during("network_bandwidth_limit") and during("network_partition")
    # sim runs all 15 rounds in its 22.5 minutes; on GNS3 the latency and loss rounds (and the partition's,
    # where it hits a transfer) take longer, and 13-15 rounds fit (three CI-size runs here: 13, 14, 15)
    assert len(rounds) >= 12 and [r.round for r in rounds] == list(range(1, len(rounds) + 1))
    assert rounds[-1].accuracy >= 0.9


def test_a_data_set_from_the_data_dir_is_carried_into_the_nodes(server, tiny_config, tmp_path):
    """MNIST from --flopynet-data-dir (IDX files made here from scikit-learn's digits, 8x8 scaled to 28x28):
    the backend puts the folder into each FL node's volume, hard-linked (same file system here), and the
    node processes train on it as the simulation does on the host's copy."""
    from sklearn.datasets import load_digits

    from pytest_flopynet.session import Scenario
    digits = load_digits()
    images = np.pad(np.kron(digits.images, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2))) * 15  # 0-16 -> 0-240
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in (("train-images-idx3-ubyte", images[:1500]), ("train-labels-idx1-ubyte", digits.target[:1500]),
                        ("t10k-images-idx3-ubyte", images[1500:]), ("t10k-labels-idx1-ubyte", digits.target[1500:])):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        (raw / name).write_bytes(header + array.astype(np.uint8).tobytes())
    config = tiny_config(name="tiny_mnist", fl={"dataset": "mnist"}, net={"base_latency_ms": 0})
    run = Scenario(config, seed=1, backend="gns3", data_dir=tmp_path / "data", backend_options={"gns3_url": server.url})
    seen = {}

    @run.at(0.1)  # mid round 1 (3 rounds in 0.5 s)
    def volumes(execution):
        backend = run.orchestrator.backend
        for host in config.client_names + ["fl_server"]:
            inside = docker_nodes.volume_source(backend._container(host), gns3.NODE_FOLDER) / "data" / "MNIST" / "raw"
            seen[host] = (inside / "train-images-idx3-ubyte").stat()
        seen["links"] = (raw / "train-images-idx3-ubyte").stat().st_nlink
    result = run.run()
    assert result.execution.error_message is None
    sim = Scenario(config, seed=1, backend="sim", data_dir=tmp_path / "data").run()
    size = (raw / "train-images-idx3-ubyte").stat().st_size
    assert all(seen[h].st_size == size for h in config.client_names + ["fl_server"])
    assert seen["links"] == 1 + 4  # the host's file and one link in each of the 4 FL nodes' volumes
    assert (raw / "train-images-idx3-ubyte").stat().st_nlink == 1  # the project (and its links) deleted
    assert result.rounds_completed == sim.rounds_completed == 3
    assert abs(result.final_accuracy - sim.final_accuracy) <= 0.05 and result.final_accuracy > 0.3  # 10 classes


# -- the events' effects, read back inside the nodes -----------------------------------------------
@pytest.fixture(scope="module")
def star(server, tiny_config):
    """A started star on one switch: fl_server, the tiny scenario's 3 clients (all Docker nodes of the image)."""
    config = tiny_config(net={"topology_type": "star", "node_count": 3, "link_bandwidth_mbps": 100,
                                     "base_latency_ms": 0})
    topology = build_topology(config)
    backend = make_backend("gns3", WallClock(), None, worker="gw1", options={"gns3_url": server.url})
    t0 = time.perf_counter()
    backend.build(topology)
    print(f"\n[gns3] star of 3 hosts and a switch started in {time.perf_counter() - t0:.1f} s "
          f"(created in {backend.timings['create_s']:.1f} s)")
    yield backend, topology
    backend.teardown()


def ping(backend, src: str, dst: str, count: int = 20, interval: float = 0.05) -> tuple[float, float | None]:
    """(the share of pings lost, the shortest round trip in ms) from inside src's container. The shortest:
    a ping that also waited for ARP (delayed by the filter too) or behind another frame is longer."""
    out = docker_nodes.net(backend._pid(src), "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1",
                           backend.address(dst), check=False).stdout
    share = re.search(r"([\d.]+)% packet loss", out)
    lost = float(share.group(1)) / 100 if share else 1.0  # no summary: it could not send (no address yet)
    rtt = re.search(r"= ([\d.]+)/", out)
    return lost, float(rtt.group(1)) if rtt else None


def client_link(topology, client: str) -> str:
    (name,) = [n for n, link in topology.links.items() if client in (link.a, link.b)]
    return name


def test_a_latency_condition_raises_the_round_trip_by_twice_its_delay(star):
    backend, topology = star
    _, base = ping(backend, "client_1", "fl_server")
    handle = backend.apply(LinkFilters((client_link(topology, "client_1"),), extra_delay_ms=40))
    try:
        _, slow = ping(backend, "client_1", "fl_server", count=10, interval=0.2)
    finally:
        backend.revert(handle)
    _, after = ping(backend, "client_1", "fl_server")
    # the filter delays each direction of the one link the pings cross: +80 ms a round trip
    assert 78 <= slow - base <= 86, (base, slow)
    assert after < base + 5


def test_a_loss_condition_drops_about_its_rate_each_way(star):
    backend, topology = star
    handle = backend.apply(Condition((client_link(topology, "client_1"),), loss=0.2))
    try:
        lost, _ = ping(backend, "client_1", "fl_server", count=400, interval=0.005)
    finally:
        backend.revert(handle)
    # a ping is lost when the request or the reply is: 1 - 0.8^2 = 0.36; 400 pings: sd 0.024
    assert 0.36 - 0.1 <= lost <= 0.36 + 0.1, lost
    assert ping(backend, "client_1", "fl_server")[0] == 0


def iperf(backend, client: str, server: str, seconds: int = 4) -> tuple[float, float]:
    """(upload, download) Mbit/s between client and server, measured by iperf3 inside their containers."""
    daemon = subprocess.Popen(["nsenter", "-t", str(backend._pid(server)), "-n", "--", "iperf3", "-s", "-1", "-p", "5201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rates = []
    try:
        for reverse in ([], ["-R"]):
            time.sleep(0.5)
            out = docker_nodes.net(backend._pid(client), "iperf3", "-c", backend.address(server), "-p", "5201", "-t",
                                   str(seconds), "-J", *reverse).stdout
            rates.append(json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6)
            if not reverse:
                daemon.wait(timeout=10)
                daemon = subprocess.Popen(["nsenter", "-t", str(backend._pid(server)), "-n", "--", "iperf3", "-s", "-1",
                                           "-p", "5201"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        daemon.kill()
        daemon.wait()
    return rates[0], rates[1]


def test_a_bandwidth_condition_caps_throughput_both_ways_within_10_percent(star):
    backend, topology = star
    handle = backend.apply(Condition((client_link(topology, "client_1"),), bandwidth_mbps=20))
    try:
        up, down = iperf(backend, "client_1", "fl_server")
    finally:
        backend.revert(handle)
    print(f"\n[gns3] 20 Mbit/s limit: {up:.1f} up, {down:.1f} down")
    assert 18 <= up <= 22 and 18 <= down <= 22, (up, down)


def test_a_partition_stops_traffic_and_ending_it_restores_it(star):
    backend, topology = star
    assert ping(backend, "client_1", "fl_server", count=3)[0] == 0
    handle = backend.apply(Condition((client_link(topology, "client_1"),), down=True))
    try:
        assert ping(backend, "client_1", "fl_server", count=5)[0] == 1.0
        assert ping(backend, "client_2", "fl_server", count=3)[0] == 0  # the other client is not cut
        assert "client_1" not in backend.reachable("fl_server")
    finally:
        backend.revert(handle)
    time.sleep(1)
    assert ping(backend, "client_1", "fl_server", count=5)[0] == 0


def test_a_failed_client_is_a_stopped_node_and_comes_back_with_its_address(star, server):
    backend, topology = star
    pid, node = backend.project.project_id, backend.nodes["client_2"]["node_id"]
    status = lambda: requests.get(f"{server.url}/v2/projects/{pid}/nodes/{node}", timeout=30).json()["status"]  # noqa: E731
    old = backend._pid("client_2")
    handle = backend.apply(Condition(hosts_down=("client_2",)))
    try:
        assert status() == "stopped"
        with pytest.raises(ProcessLookupError):
            os.kill(old, 0)
    finally:
        backend.revert(handle)
    assert status() == "started" and backend._pid("client_2") != old
    deadline = time.monotonic() + 20
    while ping(backend, "client_2", "fl_server", count=2)[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ping(backend, "client_2", "fl_server", count=3)[0] == 0


# -- pytest, clean-up -----------------------------------------------------------------------------------
# 0.8861 on sim with seed 0 (`flopynet run`): the gate holds only if the nodes really trained
SMALL = ("name: g\nfl_config: {model_architecture: logreg, total_rounds: 2, clients_per_round: 2, local_epochs: 5, "
         "learning_rate: 0.5, dataset: digits, client_data_sizes: [200, 200]}\n"
         "network_config: {topology_type: star, node_count: 3}\ngates: ['final_accuracy >= 0.85']\n")


def test_a_scenario_under_pytest_on_gns3_passes_and_leaves_no_project(pytester, server, image):
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    (pytester.path / "g.scenario.yaml").write_text(SMALL)
    before = projects(server.url)
    result = pytester.runpytest_subprocess("-rs", "--flopynet-backend", "gns3", "--flopynet-gns3-url", server.url)
    result.assert_outcomes(passed=1)
    assert projects(server.url) == before


def test_cleanup_deletes_the_project_of_a_run_that_was_killed(server, tiny_config, tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        "import os, signal, sys\n"
        "from pytest_flopynet.engine.clock import WallClock\n"
        "from pytest_flopynet.network import build_topology, make_backend\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from tiny import config\n"
        f"b = make_backend('gns3', WallClock(), None, worker='gw9', options={{'gns3_url': {server.url!r}, "
        "'gns3_templates': 'server=VPCS,client=VPCS,switch=Ethernet switch'})\n"
        "b.create(build_topology(config))\n"
        "print(b.project.project_id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    (tmp_path / "tiny.py").write_text(
        "from pytest_flopynet.model import from_dict\n"
        "config = from_dict({'name': 'crash', 'fl_config': {'clients_per_round': 1, 'client_data_sizes': [10]},"
        " 'network_config': {'topology_type': 'star', 'node_count': 2}})\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    project = done.stdout.split()[0]
    assert project in projects(server.url)
    assert any(project in thing for thing in gns3.leftovers())
    removed = gns3.cleanup()
    assert any("flopynet-gw9-crash-" in thing for thing in removed), removed
    assert project not in projects(server.url)
    assert not any(project in thing for thing in gns3.leftovers())
