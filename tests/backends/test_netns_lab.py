"""The netns lab: namespaces, veth links and Open vSwitch bridges on the userspace datapath, with
private OVS daemons; FL node processes training over it; and nothing left behind, crash included."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig
from pytest_flopynet.fl.node import NodeConfig
from pytest_flopynet.network import build_topology
from pytest_flopynet.network.lab import STATE_DIR, NetnsLab, cleanup, unavailable

reason = unavailable()
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")


def config(topology_type="star", switches=1, rounds=2):
    return ScenarioConfig(name="lab", duration_minutes=10,
                          fl_config=FLConfig(model_architecture="logreg", total_rounds=rounds, clients_per_round=3,
                                             learning_rate=0.2, local_epochs=2, client_data_sizes=[100, 100, 100]),
                          network_config=NetworkConfig(topology_type=topology_type, node_count=4,
                                                       switch_count=switches))


def leftovers(prefix: str) -> list[str]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in (namespaces + links).splitlines() if line.startswith(prefix)]


def reachable(lab, src, dst, within=20.0) -> float | None:
    start = time.time()
    while time.time() - start < within:
        if lab.run(src, ["ping", "-c", "1", "-W", "1", lab.ip(dst)]).returncode == 0:
            return time.time() - start
    return None


def train_over(lab, cfg, tmp_path) -> list[dict]:
    node_json = NodeConfig.write(tmp_path / "node.json", cfg, seed=3)
    node = [sys.executable, "-m", "pytest_flopynet.fl.node", "--config", str(node_json)]
    server = lab.popen("fl_server", [*node, "--role", "server", "--listen", f"{lab.ip('fl_server')}:7000",
                                     "--join-timeout", "60"], stdout=subprocess.PIPE, text=True)
    assert json.loads(server.stdout.readline())["host"] == lab.ip("fl_server")
    clients = [lab.popen(c, [*node, "--role", "client", "--name", c, "--server", f"{lab.ip('fl_server')}:7000"])
               for c in ("client_1", "client_2", "client_3")]
    out, _ = server.communicate(timeout=180)
    assert all(c.wait(timeout=60) == 0 for c in clients)
    return [r for r in map(json.loads, out.splitlines()) if r["event"] == "round"]


def test_fl_nodes_train_over_open_vswitch_between_namespaces(tmp_path):
    cfg = config()
    with NetnsLab(build_topology(cfg)) as lab:
        assert len(lab.namespaces) == 4 and reachable(lab, "client_1", "fl_server") is not None
        rounds = train_over(lab, cfg, tmp_path)
        assert [len(r["participants"]) for r in rounds] == [3, 3]
        assert rounds[-1]["accuracy"] > 0.5
        prefix = lab.prefix
    assert leftovers(prefix) == []
    assert not (STATE_DIR / f"{prefix}.json").exists()


def test_a_mesh_with_trunk_loops_is_reachable_through_rstp():
    with NetnsLab(build_topology(config("mesh", switches=3))) as lab:
        assert lab._loops()
        assert reachable(lab, "client_1", "fl_server") is not None
        assert reachable(lab, "client_3", "client_2") is not None


def test_two_labs_at_once_both_pass_traffic():
    """Each lab's switches run in a namespace of their own: OVS's userspace datapath makes one tap
    device ("ovs-netdev") per namespace, and a second lab beside the first once passed nothing."""
    topo = build_topology(config())
    with NetnsLab(topo, "gw0", label="a") as a, NetnsLab(topo, "gw1", label="b") as b:
        assert reachable(a, "client_1", "fl_server") is not None
        assert reachable(b, "client_1", "fl_server") is not None
        assert a.switch_ns != b.switch_ns


def test_cleanup_removes_what_a_killed_run_left(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys, time\n"
        "from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig\n"
        "from pytest_flopynet.network import build_topology\n"
        "from pytest_flopynet.network.lab import NetnsLab\n"
        "cfg = ScenarioConfig(name='x', fl_config=FLConfig(client_data_sizes=[10, 10]),\n"
        "                     network_config=NetworkConfig(topology_type='tree', node_count=3, switch_count=3))\n"
        "lab = NetnsLab(build_topology(cfg)).start()\n"
        "print(lab.prefix, flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    prefix = proc.stdout.readline().strip()
    state = json.loads((STATE_DIR / f"{prefix}.json").read_text())
    assert leftovers(prefix)  # the lab is there
    proc.send_signal(signal.SIGKILL)  # mid-run: no teardown
    proc.wait()
    proc.stdout.close()
    assert leftovers(prefix)
    run = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "cleanup"], capture_output=True, text=True)
    # under xdist another test's `flopynet cleanup` may remove this dead lab first: then its record is gone too
    assert run.returncode == 0 and (f"removed namespace {prefix}-main-fl_server" in run.stdout
                                    or not (STATE_DIR / f"{prefix}.json").exists())
    assert leftovers(prefix) == []
    for pid in state["pids"]:  # the lab's OVS daemons are gone (at most a zombie an init that does not reap keeps)
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "State:\tZ" in status.read_text()
    assert cleanup() == []


def test_under_ryu_the_bridges_pass_only_what_the_controller_allows(tmp_path):
    from pytest_flopynet.controller.ryu_controller import RyuController, ryu_python
    from pytest_flopynet.errors import UnavailableError
    try:
        ryu_python()
    except UnavailableError as exc:
        pytest.skip(str(exc))
    cfg = config("tree", switches=3)
    with NetnsLab(build_topology(cfg), controller="tcp:127.0.0.1:1") as lab:  # secure mode, nobody there
        assert reachable(lab, "client_1", "fl_server", within=3) is None
    lab = NetnsLab(build_topology(cfg))
    with RyuController(lab.write_plan(tmp_path / "plan.json"), netns=lab.switch_namespace()) as ryu:
        lab.controller = ryu.target
        with lab:
            assert reachable(lab, "client_1", "fl_server") is not None
            bridge = lab.bridges["s1"]
            flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{lab.run_dir}/{bridge}.mgmt"],
                                   capture_output=True, text=True).stdout
            # table miss drops, ARP goes to the controller (proxy ARP), one route per host
            assert "priority=0 actions=drop" in flows and "arp actions=CONTROLLER" in flows
            assert sum(f"nw_dst={lab.ip(h)}" in flows for h in lab.namespaces) == 4
            rounds = train_over(lab, cfg, tmp_path)
            assert [len(r["participants"]) for r in rounds] == [3, 3]
        pid = ryu.process.pid
    assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
