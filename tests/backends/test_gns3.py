"""The gns3 backend against a real gns3-server 2.2 on 127.0.0.1 (started by the session fixture from
its own virtual environment; `python -m pytest_flopynet.network.gns3 --setup-server` makes it).

Everything is read back through the server's own REST API, never from the backend's memory. Expected
values are worked out here from the scenario's numbers. These tests build projects of VPCS hosts (no
image); FL in Docker nodes, with its traffic and the events read back inside them, is test_gns3_fl.py.
"""
from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

import pytest
import yaml

from pytest_flopynet.engine.clock import VirtualClock
from pytest_flopynet.errors import FlopynetError, UnavailableError
from pytest_flopynet.model import EventType, event_duration, load_scenario
from pytest_flopynet.network import build_topology, make_backend
from pytest_flopynet.network.backend import Condition
from pytest_flopynet.network.gns3 import LinkFilters, LocalGNS3Server, compose, parse_templates

requests = pytest.importorskip("requests")
pytest.importorskip("gns3fy", reason="the gns3 extra is not installed: pip install -e '.[gns3]'")

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "scenarios" / "network_instability" / "scenario.yaml"
SWITCH_TEMPLATE = "flopynet-test-switch"


# -- the server ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def gns3_url(pytestconfig):
    """--flopynet-gns3-url when given (a full GNS3 of the user's), else a local server of our own."""
    url = pytestconfig.getoption("flopynet_gns3_url") or pytestconfig.getini("flopynet_gns3_url")
    if url:
        yield url.rstrip("/")
        return
    try:
        server = LocalGNS3Server()
        server.start()
    except UnavailableError as exc:
        pytest.skip(str(exc))
    t0 = time.perf_counter()
    yield server.url
    server.stop()
    print(f"\n[gns3] local gns3-server ran {time.perf_counter() - t0:.1f} s")


class API:
    """The server's REST API, for the tests' own reading."""

    def __init__(self, url: str):
        self.base = f"{url}/v2"

    def get(self, path: str):
        r = requests.get(self.base + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, json=None):
        return requests.post(self.base + path, json=json, timeout=30)

    def delete(self, path: str):
        return requests.delete(self.base + path, timeout=30)

    def project_ids(self) -> set[str]:
        return {p["project_id"] for p in self.get("/projects")}

    def scratch_node(self, template: str) -> requests.Response:
        """What the server says to creating a node from `template` (in a scratch project it deletes)."""
        project = self.post("/projects", {"name": f"scratch-{time.time_ns()}"}).json()
        try:
            tid = next(t["template_id"] for t in self.get("/templates") if t["name"] == template)
            return self.post(f"/projects/{project['project_id']}/templates/{tid}", {"x": 0, "y": 0, "compute_id": "local"})
        finally:
            self.delete(f"/projects/{project['project_id']}")


@pytest.fixture(scope="session")
def api(gns3_url):
    return API(gns3_url)


@pytest.fixture(scope="session")
def switch_template(api):
    """A switch template whose links can filter: a Qemu template (created here; a Qemu node is created
    without any image). GNS3's built-in Ethernet switch cannot filter a link between two of them."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("no switch template: qemu-system-x86_64 is not installed for a Qemu one")
    if SWITCH_TEMPLATE not in {t["name"] for t in api.get("/templates")}:
        r = api.post("/templates", {"name": SWITCH_TEMPLATE, "template_type": "qemu", "compute_id": "local",
                                    "qemu_path": "qemu-system-x86_64", "adapters": 4, "ram": 128, "category": "switch"})
        assert r.status_code == 201, r.text
    return SWITCH_TEMPLATE


@pytest.fixture
def seed():
    return load_scenario(SEED)


def vpcs(switch_template: str) -> str:
    """VPCS hosts (no image needed): what the tests of filters and project building map, so that they need
    neither Docker nor the FL node image (tests/backends/test_gns3_fl.py runs FL in Docker nodes)."""
    return f"server=VPCS,client=VPCS,switch={switch_template}"


def make(gns3_url, **options):
    return make_backend("gns3", VirtualClock(), None, worker="gw1",
                        options={"gns3_url": gns3_url, **options})


@pytest.fixture
def built(gns3_url, switch_template, seed, api):
    """The seed's network_instability topology built on the server; torn down after the test."""
    topology = build_topology(seed)
    backend = make(gns3_url, gns3_templates=vpcs(switch_template), gns3_link_delay="1")
    t0 = time.perf_counter()
    backend.create(topology)
    print(f"\n[gns3] network_instability built in {time.perf_counter() - t0:.2f} s "
          f"({len(topology.hosts) + len(topology.switches)} nodes, {len(topology.links)} links)")
    yield backend, topology
    backend.teardown()


def links_by_ends(api: API, project_id: str) -> dict[frozenset, dict]:
    """The project's links on the server, keyed by the names of their two nodes."""
    names = {n["node_id"]: n["name"] for n in api.get(f"/projects/{project_id}/nodes")}
    return {frozenset(names[e["node_id"]] for e in link["nodes"]): link
            for link in api.get(f"/projects/{project_id}/links")}


def server_links(api: API, backend, topology) -> dict[str, dict]:
    """Topology link name -> the server's link (filters, suspend), matched by the node names at its ends."""
    by_ends = links_by_ends(api, backend.project.project_id)
    return {name: by_ends[frozenset((link.a, link.b))] for name, link in topology.links.items()}


# -- building ---------------------------------------------------------------------------------------
def test_the_seed_topology_is_built_and_the_project_is_gone_after_teardown(built, api, switch_template):
    backend, topology = built
    pid = backend.project.project_id
    project = api.get(f"/projects/{pid}")
    assert re.fullmatch(r"flopynet-gw1-network_instability-[0-9a-f]{6}", project["name"])

    # mesh, node_count 8, 6 clients, 4 switches: the server and 6 clients and 1 idle host; the server on
    # s1; clients and idle hosts round-robin over s2, s3, s4, s1; the switches fully meshed
    hosts = ["fl_server", *(f"client_{i}" for i in range(1, 7)), "host_1"]
    switches = ["s1", "s2", "s3", "s4"]
    order = ["s2", "s3", "s4", "s1"]
    expected_links = {frozenset(("fl_server", "s1"))}
    expected_links |= {frozenset((h, order[i % 4])) for i, h in enumerate(hosts[1:])}
    expected_links |= {frozenset((a, b)) for i, a in enumerate(switches) for b in switches[i + 1:]}
    assert len(expected_links) == 8 + 6

    nodes = api.get(f"/projects/{pid}/nodes")
    assert sorted(n["name"] for n in nodes) == sorted(hosts + switches)
    templates = {t["template_id"]: t["name"] for t in api.get("/templates")}
    kinds = {n["name"]: templates[n["template_id"]] for n in nodes}
    assert kinds == {**{h: "VPCS" for h in hosts}, **{s: switch_template for s in switches}}
    assert {n["status"] for n in nodes} == {"stopped"}

    links = links_by_ends(api, pid)
    assert set(links) == expected_links
    # every link carries the scenario's own 20 ms as a delay filter (gns3_link_delay), no jitter, no loss
    assert {str(link["filters"]) for link in links.values()} == {"{'delay': [20, 0]}"}
    # the switches' 6 links form cycles: 3 stay suspended (a spanning tree of 4 switches has 3 links), the
    # switches stay connected, and no host link is suspended
    held = {frozenset((topology.links[n].a, topology.links[n].b)) for n in backend.reserve}
    assert {e for e, link in links.items() if link["suspend"]} == held and len(held) == 3
    import networkx as nx
    trunks = nx.Graph([tuple(e) for e in expected_links if e <= set(switches) and e not in held])
    assert nx.is_tree(trunks) and set(trunks) == set(switches)
    # no port is used twice
    ends = [(e["node_id"], e["adapter_number"], e["port_number"]) for link in links.values() for e in link["nodes"]]
    assert len(ends) == len(set(ends)) == 28

    backend.teardown()
    assert pid not in api.project_ids()
    backend.teardown()  # twice is harmless


def drive(backend, topology, events, seed_value: int, checkpoints: list[float], read):
    """Fire the events through the real handlers of engine/events.py on a virtual clock, as the
    orchestrator schedules them (start at trigger_time, the handler's undo at trigger_time + duration),
    and call read(t) at each checkpoint after everything due then has fired."""
    from pytest_flopynet.controller import Controller
    from pytest_flopynet.engine.events import HANDLERS, EventContext
    from pytest_flopynet.policy import PolicyEngine
    clock = backend.clock
    ctx = EventContext(backend, topology, None, PolicyEngine(), Controller(topology), clock, seed_value)
    for index, event in events:
        def start(event=event, index=index):
            undo = HANDLERS[event.event_type](event, ctx, index)
            duration = event_duration(event)
            if duration is not None:
                clock.scheduler.at(clock.now() + duration, undo, f"{event.event_type} end")
        clock.scheduler.at(event.trigger_time, start, str(event.event_type))
    seen = {}
    for t in checkpoints:
        clock.advance_to(t)
        seen[t] = read()
    return ctx, seen


def test_latency_and_loss_events_set_the_filters_at_their_times_and_restore_them(built, api, seed):
    from pytest_flopynet.engine.events import target_links
    backend, topology = built
    events = [(i, e) for i, e in enumerate(seed.events)
              if e.event_type in (EventType.NETWORK_LATENCY_INCREASE, EventType.NETWORK_PACKET_LOSS)]
    (li, latency), (pi, loss) = events
    base = seed.network_config.base_latency_ms
    # latency: +30 ms on 50% of the 14 links for 180 s from 300 s
    assert (latency.trigger_time, latency.duration, latency.parameters["latency_increase_ms"]) == (300, 180, 30)
    slow_delay = round(base + latency.parameters["latency_increase_ms"])  # 50
    slow_count = round(latency.parameters["affected_percentage"] * len(topology.links))  # 7
    # loss: 2% mean on the 6 client links for 120 s from 600 s, in 5 s bursts at 5x the mean (10%)
    assert (loss.trigger_time, loss.duration, loss.parameters["burst_duration"]) == (600, 120, 5)
    burst_pct = round(100 * 5 * loss.parameters["packet_loss_rate"])  # 10
    client_links = {f"client_{i}-{s}" for i, s in zip(range(1, 7), ["s2", "s3", "s4", "s1", "s2", "s3"])}

    checkpoints = [299.9, 300, 479.9, 480, 599.9, 600, 604.9, 605, 720]
    ctx, seen = drive(backend, topology, events, seed_value=7, checkpoints=checkpoints,
                      read=lambda: {n: link["filters"] for n, link in server_links(api, backend, topology).items()})
    slow = set(target_links(latency, ctx, li))
    assert len(slow) == slow_count and slow <= set(topology.links)
    assert set(target_links(loss, ctx, pi)) == client_links

    normal = {name: {"delay": [base, 0]} for name in topology.links}
    for t in (299.9, 480, 599.9, 605, 720):
        assert seen[t] == normal, t
    for t in (300, 479.9):
        assert seen[t] == {n: {"delay": [slow_delay if n in slow else base, 0]} for n in topology.links}, t
    for t in (600, 604.9):
        assert seen[t] == {n: {"delay": [base, 0], **({"packet_loss": [burst_pct]} if n in client_links else {})}
                           for n in topology.links}, t


def test_a_partition_suspends_the_clients_links_and_bandwidth_needs_a_docker_end(built, api, seed):
    backend, topology = built
    partition = next((i, e) for i, e in enumerate(seed.events) if e.event_type == EventType.NETWORK_PARTITION)
    bandwidth = next((i, e) for i, e in enumerate(seed.events) if e.event_type == EventType.NETWORK_BANDWIDTH_LIMIT)
    # client_1 on s2, client_2 on s3; 90 s from 1200 s
    cut = {"client_1-s2", "client_2-s3"}
    ctx, seen = drive(backend, topology, [partition], seed_value=7, checkpoints=[1199, 1200, 1289.9, 1290],
                      read=lambda: ({n for n, link in server_links(api, backend, topology).items()
                                     if link["suspend"]} - backend.reserve,
                                    "client_1" in backend.reachable("fl_server")))
    for t, down in ((1199, set()), (1200, cut), (1289.9, cut), (1290, set())):
        assert seen[t] == (down, not down), t

    from pytest_flopynet.engine.events import HANDLERS
    before = server_links(api, backend, topology)
    with pytest.raises(UnavailableError, match="cannot limit the bandwidth of link fl_server-s1: neither end is a Docker node"):
        HANDLERS[bandwidth[1].event_type](bandwidth[1], ctx, bandwidth[0])
    assert server_links(api, backend, topology) == before


def test_overlapping_conditions_compose_and_each_revert_removes_its_part(built, api):
    backend, topology = built
    link = "client_1-s2"
    first = backend.apply(LinkFilters((link,), extra_delay_ms=30, jitter_ms=5, loss=0.1))
    second = backend.apply(LinkFilters((link,), extra_delay_ms=10, loss=0.2, corrupt=0.05, frequency_drop=7,
                                       bpf=("icmp",)))
    down = backend.apply(Condition((link,), down=True))
    read = lambda: server_links(api, backend, topology)[link]  # noqa: E731
    # delays add (20 + 30 + 10), jitters add, losses compound (1 - 0.9 * 0.8 = 28%), a failure suspends
    assert read()["filters"] == {"delay": [60, 5], "packet_loss": [28], "corrupt": [5], "frequency_drop": [7],
                                 "bpf": ["icmp"]}
    assert read()["suspend"] is True
    assert "client_1" not in backend.reachable("fl_server")
    backend.revert(down)
    assert read()["suspend"] is False and "client_1" in backend.reachable("fl_server")
    backend.revert(first)
    assert read()["filters"] == {"delay": [30, 0], "packet_loss": [20], "corrupt": [5], "frequency_drop": [7],
                                 "bpf": ["icmp"]}
    backend.revert(second)
    assert read()["filters"] == {"delay": [20, 0]}
    others = {n: v["filters"] for n, v in server_links(api, backend, topology).items() if n != link}
    assert others == {n: {"delay": [20, 0]} for n in others}


SMALL = ("name: g\nfl_config: {model_architecture: logreg, total_rounds: 1, clients_per_round: 2, "
         "client_data_sizes: [50, 50]}\nnetwork_config: {topology_type: star, node_count: 3}\n")


# -- errors -------------------------------------------------------------------------------------------
def test_a_wrong_template_name_fails_with_the_servers_templates(gns3_url, api, seed):
    before = api.project_ids()
    backend = make(gns3_url, gns3_templates="client=No Such Template")
    with pytest.raises(FlopynetError) as info:
        backend.build(build_topology(seed))
    assert not isinstance(info.value, UnavailableError)
    message = str(info.value)
    assert "'No Such Template'" in message and "client" in message
    listed = message.split("its templates: ", 1)[1].split(", ")
    assert sorted(listed) == sorted(t["name"] for t in api.get("/templates"))
    assert api.project_ids() == before


def test_a_switch_template_the_server_refuses_is_a_skip_with_its_reason(gns3_url, api, seed):
    # a VirtualBox template: the server refuses its nodes where VirtualBox is missing (it has uBridge,
    # Dynamips and Docker here, so their templates would be created)
    name = "flopynet-test-virtualbox-switch"
    if name not in {t["name"] for t in api.get("/templates")}:
        r = api.post("/templates", {"name": name, "template_type": "virtualbox", "vmname": "flopynet-no-such-vm",
                                    "adapters": 4, "compute_id": "local"})
        assert r.status_code == 201, r.text
    refused = api.scratch_node(name)
    if refused.ok:
        pytest.skip("this GNS3 server creates VirtualBox nodes (VirtualBox is installed)")
    before = api.project_ids()
    with pytest.raises(UnavailableError) as info:
        make(gns3_url, gns3_templates=f"server=VPCS,client=VPCS,switch={name}").build(build_topology(seed))
    assert str(info.value).startswith(f"GNS3 server {gns3_url} cannot create switch s1 from template '{name}': "
                                      f"409: {refused.json()['message']}")
    assert api.project_ids() == before  # the half-built project was deleted


def test_no_server_is_a_skip_with_the_url_and_the_error(seed):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(UnavailableError) as info:
        make(url).build(build_topology(seed))
    assert str(info.value).startswith(f"no GNS3 server at {url}: ConnectionError")
    assert "Connection refused" in str(info.value)


def test_a_scenario_on_an_unreachable_server_is_reported_as_skipped(pytester):
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    (pytester.path / "g.scenario.yaml").write_text(SMALL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = pytester.runpytest_subprocess("-rs", "--flopynet-backend", "gns3",
                                           "--flopynet-gns3-url", f"http://127.0.0.1:{port}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*no GNS3 server at http://127.0.0.1:{port}: ConnectionError*"])


def test_credentials_come_from_the_environment_and_never_show(monkeypatch, seed):
    password = "s3cret-" + "x" * 8
    try:
        server = LocalGNS3Server(auth=("flopy", password)).start()
    except UnavailableError as exc:
        pytest.skip(str(exc))
    try:
        topology = build_topology(seed)
        monkeypatch.delenv("FLOPYNET_GNS3_USER", raising=False)
        with pytest.raises(FlopynetError, match="refused the credentials .none given: set FLOPYNET_GNS3_USER and "
                                                "FLOPYNET_GNS3_PASSWORD."):
            make(server.url).create(topology)
        monkeypatch.setenv("FLOPYNET_GNS3_USER", "flopy")
        monkeypatch.setenv("FLOPYNET_GNS3_PASSWORD", "wrong-" + password)
        with pytest.raises(FlopynetError) as info:
            make(server.url).create(topology)
        assert "from FLOPYNET_GNS3_USER/FLOPYNET_GNS3_PASSWORD" in str(info.value) and password not in str(info.value)
        monkeypatch.setenv("FLOPYNET_GNS3_PASSWORD", password)
        backend = make(server.url, gns3_templates="server=VPCS,client=VPCS,switch=No Such Switch")
        with pytest.raises(FlopynetError, match="no template 'No Such Switch'") as info:
            backend.create(topology)  # authenticated: it got as far as the server's template list
        assert password not in str(info.value) and password not in repr(backend.__dict__.get("options"))
    finally:
        server.stop()


def test_gns3_keep_leaves_the_project_for_debugging(gns3_url, api, switch_template, tiny_config):
    backend = make(gns3_url, gns3_templates=vpcs(switch_template), gns3_keep="true")
    backend.create(build_topology(tiny_config()))
    pid = backend.project.project_id
    with pytest.warns(UserWarning, match=f"GNS3 project flopynet-gw1-tiny-[0-9a-f]{{6}} .{pid}. kept on {gns3_url}"):
        backend.teardown()
    assert pid in api.project_ids()
    api.delete(f"/projects/{pid}")


# -- templates per role, the controller node, .gns3 projects ----------------------------------------------
def test_template_settings_from_the_scenario_and_the_option():
    assert parse_templates("fl-node", "x") == {"server": "fl-node", "client": "fl-node"}
    assert parse_templates({"switch": "Open vSwitch", "url": "http://h:3080"}, "x") == {
        "switch": "Open vSwitch", "url": "http://h:3080"}
    assert parse_templates("switch=Open vSwitch, controller=Ryu", "x") == {"switch": "Open vSwitch", "controller": "Ryu"}
    with pytest.raises(FlopynetError, match="unknown keys swich"):
        parse_templates({"swich": "x"}, "x")


def test_filters_take_whole_numbers_and_rounding_is_said(seed):
    topology = build_topology(seed)
    with pytest.warns(UserWarning, match="packet_loss 11.8 % set as 12 %"):
        states = compose(topology, [Condition(("s1-s2",), loss=0.02), Condition(("s1-s2",), loss=0.1)])
    assert states["s1-s2"].filters == {"delay": [20, 0], "packet_loss": [12]}
    assert compose(topology, [Condition(("s1-s2",), loss=0.07)])["s1-s2"].filters["packet_loss"] == [7]  # 7.000000000000001


def test_a_controller_node_joins_the_first_switch(gns3_url, api, switch_template, tiny_config):
    config = tiny_config(net={"topology_type": "star", "node_count": 4, "switch_count": 2})
    topology = build_topology(config)
    backend = make(gns3_url, gns3_templates=vpcs(switch_template) + ",controller=VPCS")
    backend.create(topology)
    try:
        pid = backend.project.project_id
        assert len(api.get(f"/projects/{pid}/nodes")) == 4 + 2 + 1
        links = links_by_ends(api, pid)
        assert len(links) == len(topology.links) + 1 and frozenset(("controller", "s1")) in links
    finally:
        backend.teardown()
    assert pid not in api.project_ids()


def test_a_gns3_project_file_is_imported_as_the_project(gns3_url, api, tiny_config, tmp_path):
    # a user's project: two VPCS linked directly, made on the server and saved as its .gns3 file
    made = api.post("/projects", {"name": f"user-lab-{time.time_ns()}"}).json()
    pid = made["project_id"]
    vpcs = next(t["template_id"] for t in api.get("/templates") if t["name"] == "VPCS")
    ids = []
    for name in ("fl_server", "client_1"):
        node = api.post(f"/projects/{pid}/templates/{vpcs}", {"x": 0, "y": 0, "compute_id": "local"}).json()
        requests.put(f"{api.base}/projects/{pid}/nodes/{node['node_id']}", json={"name": name}, timeout=30)
        ids.append(node["node_id"])
    api.post(f"/projects/{pid}/links", {"nodes": [{"node_id": i, "adapter_number": 0, "port_number": 0} for i in ids]})
    lab = tmp_path / "lab.gns3"
    lab.write_bytes(requests.get(f"{api.base}/projects/{pid}/files/{made['filename']}", timeout=30).content)
    api.delete(f"/projects/{pid}")

    config = tiny_config(fl={"client_data_sizes": [100], "clients_per_round": 1},
                         net={"topology_type": "custom", "custom_topology_file": "lab.gns3", "node_count": 2,
                              "base_latency_ms": 15})
    topology = build_topology(config, base_dir=tmp_path)
    assert sorted(topology.hosts) == ["client_1", "fl_server"] and len(topology.links) == 1
    (name,) = topology.links
    backend = make(gns3_url, gns3_link_delay="1")
    backend.create(topology)
    try:
        imported = backend.project.project_id
        assert imported != pid and re.fullmatch(r"flopynet-gw1-tiny-[0-9a-f]{6}", api.get(f"/projects/{imported}")["name"])
        assert sorted(n["name"] for n in api.get(f"/projects/{imported}/nodes")) == ["client_1", "fl_server"]
        backend.apply(Condition((name,), extra_delay_ms=5, loss=0.03))
        (link,) = api.get(f"/projects/{imported}/links")
        assert link["filters"] == {"delay": [20, 0], "packet_loss": [3]}
    finally:
        backend.teardown()
    assert imported not in api.project_ids()
    assert backend.timings["create_s"] > 0


@pytest.mark.parametrize("doc, heading", [("README.md", "Backends"), ("docs/backends.md", "The GNS3 backend")])
def test_the_readmes_gns3_template_example_is_a_valid_scenario(doc, heading):
    from pytest_flopynet.model.io import from_dict
    readme = (ROOT / doc).read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", readme, re.S).group(1))
    config = from_dict({"name": "x", "fl_config": {"clients_per_round": 2}, **example})
    settings = parse_templates(config.network_config.gns3_template, "x")
    assert settings == {"server": "fl-node", "client": "fl-node", "switch": "Open vSwitch", "controller": "Ryu",
                        "url": "http://127.0.0.1:3080"}


def test_credentials_in_the_url_reach_the_connection_and_no_message_or_report(tmp_path, tiny_config):
    pytest.importorskip("gns3fy")
    from pytest_flopynet import run_scenario
    from pytest_flopynet.processes import free_port
    url = f"http://bob:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    backend = make(url)
    config = tiny_config()
    backend._settings(build_topology(config))
    with pytest.raises(UnavailableError) as info:
        backend.connect()
    assert (backend.connector.user, backend.connector.cred) == ("bob", "s3cret")
    assert "127.0.0.1" in str(info.value) and "s3cret" not in str(info.value) and "bob" not in str(info.value)
    config.network_config.gns3_template = {"url": url, "client": "FL node"}
    run_scenario(config, seed=0, reports_dir=tmp_path / "report")
    written = (tmp_path / "report" / "scenario.yaml").read_text()
    assert "url: http://127.0.0.1:" in written and "s3cret" not in written
