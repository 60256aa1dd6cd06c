"""The simulated network's time model against hand-computed transfer times (DESIGN.md, Time model)."""
import math

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_flopynet import NetworkConfig, ScenarioConfig
from pytest_flopynet.controller import Controller
from pytest_flopynet.engine.clock import VirtualClock
from pytest_flopynet.network import Condition, Flow, build_topology
from pytest_flopynet.network.flows import max_min_rates
from pytest_flopynet.network.sim import SimNetwork

# payload bytes/s of a 10 Mbit/s link: 1448 payload bytes in every 1514-byte frame
C10 = 10e6 / 8 * 1448 / 1514


def network(topology_type="star", clients=2, switches=1, bw=10, latency=0.0, cc="cubic"):
    config = ScenarioConfig(name="n", network_config=NetworkConfig(
        topology_type=topology_type, node_count=clients + 1, switch_count=switches, link_bandwidth_mbps=bw,
        base_latency_ms=latency, tcp_congestion_control=cc))
    topo = build_topology(config)
    clock = VirtualClock()
    net = SimNetwork(clock, Controller(topo))
    net.build(topo)
    return net, clock


# -- max-min fairness ------------------------------------------------------------------------

def test_max_min_textbook_example():
    # link X (10) carries f1 and f2; link Y (4) carries f2 and f3: Y gives f2 and f3 2 each, f1 takes the rest
    rates = max_min_rates({"f1": ["X"], "f2": ["X", "Y"], "f3": ["Y"]}, {"X": 10.0, "Y": 4.0})
    assert rates == pytest.approx({"f1": 8.0, "f2": 2.0, "f3": 2.0})


def test_a_capped_flow_leaves_its_share_to_the_others():
    rates = max_min_rates({"a": ["L"], "b": ["L"], "c": ["L"]}, {"L": 9.0}, caps={"a": 1.0})
    assert rates == pytest.approx({"a": 1.0, "b": 4.0, "c": 4.0})


# -- transfers ------------------------------------------------------------------------------

def test_one_transfer_matches_the_analytic_time():
    net, clock = network(clients=1, latency=5.0)
    nbytes = 76_840
    # path client_1 - s1 - fl_server: one way 10 ms, RTT 20 ms; set-up 1 RTT, then bytes/C, then one way;
    # slow start: the first round trip sends the initial window of 10 segments (14,480 B, 12.1 ms at C) and
    # waits for its ACKs; the second's 28,960 B would take 24.2 ms, more than a round trip: C from then on
    expected = 0.020 + 0.020 + (nbytes - 14_480) / C10 + 0.010
    (done,) = net.transfer([Flow("fl_server", "client_1", nbytes, 0.0)])
    assert done == pytest.approx(expected, rel=1e-9)
    assert clock.now() == pytest.approx(expected)


def test_two_clients_sharing_a_bottleneck_get_half_each():
    net, _ = network(clients=2, latency=5.0)
    nbytes = 500_000
    alone = net.transfer([Flow("fl_server", "client_1", nbytes, 0.0)])[0]
    net2, _ = network(clients=2, latency=5.0)
    both = net2.transfer([Flow("fl_server", "client_1", nbytes, 0.0), Flow("fl_server", "client_2", nbytes, 0.0)])
    # the server's link carries both: each gets C/2, so the data phase takes twice as long
    assert both == pytest.approx([0.030 + 2 * nbytes / C10] * 2)
    # alone, it waits for the first window's ACKs (12.1 ms of 20); at C/2 the first window takes longer
    # than a round trip, so slow start costs the pair nothing
    assert alone == pytest.approx(0.030 + 0.020 + (nbytes - 14_480) / C10)


def test_loss_based_flows_share_by_rtt_and_finish_apart_bbr_flows_share_equally():
    """client_1's path has no delay (RTT 0: no set-up, no slow start), client_2's link 1.5 ms each way (RTT
    3 ms); both send C/2 bytes. client_1 is alone until client_2's set-up ends at 3 ms. Then cubic shares by
    1 / (RTT + 1 ms), 1000 : 250, so 0.8 C : 0.2 C (client_2's first window, 14,480 B, takes 60 ms at 0.2 C:
    longer than its round trip, no slow-start wait): client_1's last 0.497 C take 0.62125 s; client_2 has
    then sent 0.12425 C, and its last 0.37575 C go at C: done at 1.0 s plus its 1.5 ms one way. BBR shares
    equally: client_1 ends at 0.003 + 0.994 s, client_2 at 1.0 + 0.0015 s."""
    for cc, near in (("cubic", 0.003 + 0.497 / 0.8), ("bbr", 0.003 + 0.497 / 0.5)):
        net, _ = network(clients=2, latency=0.0, cc=cc)
        net.apply(Condition(("client_2-s1",), extra_delay_ms=1.5))
        a, b = net.transfer([Flow("client_1", "fl_server", 0.5 * C10, 0.0), Flow("client_2", "fl_server", 0.5 * C10, 0.0)])
        assert (a, b) == (pytest.approx(near, rel=1e-9), pytest.approx(1.0015, rel=1e-9)), cc


def test_rates_change_when_a_flow_starts_and_ends():
    net, _ = network(clients=2)
    # A alone from 0 to 1 s sends C; from 1 s A and B share; B (0.5 C) ends at 2 s; A's last 0.5 C ends at 2.5 s
    a, b = net.transfer([Flow("fl_server", "client_1", 2 * C10, 0.0), Flow("fl_server", "client_2", 0.5 * C10, 1.0)])
    assert (a, b) == (pytest.approx(2.5), pytest.approx(2.0))


def test_a_condition_that_fires_mid_transfer_takes_effect_mid_transfer():
    net, clock = network(clients=1)
    handles = []
    clock.scheduler.at(1.0, lambda: handles.append(net.apply(Condition(("fl_server-s1",), bandwidth_mbps=5))))
    clock.scheduler.at(2.0, lambda: net.revert(handles.pop()))
    # 0-1 s at C: C sent; 1-2 s at C/2: 0.5 C; the last 0.5 C at C again: done at 2.5 s
    (done,) = net.transfer([Flow("fl_server", "client_1", 2 * C10, 0.0)])
    assert done == pytest.approx(2.5)


def test_loss_caps_a_cubic_flow_at_padhyes_window_rate_and_charges_its_retransmissions():
    net, _ = network(clients=1, bw=100, latency=5.0)
    net.apply(Condition(("client_1-s1",), loss=0.01))
    # RTT 20 ms, p = 1%: Padhye's MSS / (RTT sqrt(2bp/3)), b = 1, is 886,715 B/s, above cubic's own response
    # (128,300 B/s) and far below the 100 Mbit/s link, whose share is L / 0.99 (the lossy link drops before it
    # transmits: it carries 99% of what the flow sends); the sawtooth, (share^-2 + window^-2)^-1/2, is
    # 884,334 B/s; 1% of what it sends is lost and sent again
    window = 1448 / (0.020 * math.sqrt(2 * 0.01 / 3))
    share = 100e6 / 8 * 1448 / 1514 / 0.99
    rate = (share**-2 + window**-2) ** -0.5
    goodput = rate * 0.99
    # set-up: 1 RTT and, SYN or SYN-ACK lost with q = 1 - 0.99^2, Ts q (1 - (2q)^6) / (1 - 2q), Ts = 1 s;
    # slow start: the first round sends IW10 (14,480 B) in 16.4 ms and waits for its ACKs until 20 ms; the
    # second's 28,960 B outgrow the 17,687 B a round carries at this rate: slow start ends
    q = 1 - 0.99 ** 2
    setup = 0.020 + q * (1 - (2 * q) ** 6) / (1 - 2 * q)
    (done,) = net.transfer([Flow("client_1", "fl_server", 600_000, 0.0)])
    assert done == pytest.approx(setup + 0.020 + (600_000 - 0.99 * 14_480) / goodput + 0.010)


def test_a_partitioned_flow_stalls_and_resumes():
    net, clock = network(clients=1)
    handles = []
    clock.scheduler.at(0.5, lambda: handles.append(net.apply(Condition(("client_1-s1",), down=True))))
    clock.scheduler.at(1.5, lambda: net.revert(handles.pop()))
    (done,) = net.transfer([Flow("client_1", "fl_server", C10, 0.0)])
    assert done == pytest.approx(2.0)  # 0.5 s sent, 1 s stalled, 0.5 s more


def test_a_flow_cut_off_in_slow_start_starts_the_round_over_when_its_route_returns():
    """RTT 20 ms: active from 20 ms, the first window (14,480 B) would leave by 32.1 ms, but the link goes
    down at 25 ms (5 ms x C sent). Back at 1.025 s the round starts over: 14,480 B, a wait until 1.045 s,
    then a round of 20 ms at C (the 28,960 B window outlasts it: slow start ends at 1.065 s), then the
    rest at C, and the last byte's 10 ms."""
    net, clock = network(clients=1, latency=5.0)
    handles = []
    clock.scheduler.at(0.025, lambda: handles.append(net.apply(Condition(("client_1-s1",), down=True))))
    clock.scheduler.at(1.025, lambda: net.revert(handles.pop()))
    (done,) = net.transfer([Flow("client_1", "fl_server", C10, 0.0)])
    sent = 0.005 * C10 + 14_480 + 0.020 * C10
    assert done == pytest.approx(1.065 + (C10 - sent) / C10 + 0.010, rel=1e-9)


def test_a_transfer_that_misses_its_deadline_reports_none():
    net, clock = network(clients=1)
    net.apply(Condition(("client_1-s1",), down=True))
    assert net.transfer([Flow("client_1", "fl_server", 1000, 0.0)], deadline=3.0) == [None]
    assert clock.now() == 3.0


def test_a_failed_mesh_link_reroutes_and_the_transfer_completes():
    net, clock = network("mesh", clients=1, switches=3, latency=5.0)
    assert net.controller.route("client_1", "fl_server") == [("client_1-s2", "client_1"), ("s1-s2", "s2"),
                                                              ("fl_server-s1", "s1")]
    net.apply(Condition(("s1-s2",), down=True))
    assert [name for name, _ in net.controller.route("client_1", "fl_server")] == [
        "client_1-s2", "s2-s3", "s1-s3", "fl_server-s1"]
    (done,) = net.transfer([Flow("client_1", "fl_server", C10, 0.0)])
    # four 5 ms links: RTT 40 ms; slow start sends 14,480 B and 28,960 B in the first two round trips (idle
    # after 12.1 and 24.2 ms), then C: the third round's 57,920 B take longer than a round trip
    assert done == pytest.approx(0.040 + 0.080 + (C10 - 43_440) / C10 + 0.020)
    assert net.controller.stats["reroutes"] >= 1


def test_stats_sample_latency_loss_and_utilisation():
    net, clock = network(clients=1, latency=10.0)
    net.apply(Condition(("client_1-s1",), extra_delay_ms=30, loss=0.01))
    samples = []
    clock.scheduler.at(0.5, lambda: samples.extend([net.stats(), net.stats()]))
    net.transfer([Flow("fl_server", "client_1", 10 * C10, 0.0)])
    s, instant = samples
    assert s.latency_ms == pytest.approx((40 + 10) / 2)
    assert s.packet_loss == pytest.approx(0.01 / 2)
    # Padhye's window rate: RTT 2 * 50 ms, p = 1% -> 1448 / (0.1 sqrt(2 p / 3)) = 177,343 B/s, the sawtooth with
    # the link's 1,195,509 B/s: (C10^-2 + w^-2)^-1/2, sent on both links of the path, from the end of the
    # set-up (1 RTT and the expected SYN timeouts) on; slow start's first window (14,480 B) is out in 83 ms
    # and waits for its ACKs until the round trip ends, the second outgrows a round trip. Averaged over the
    # 0.5 s since the start; a second sample at the same instant reads the rate itself
    window = 1448 / (0.1 * math.sqrt(2 * 0.01 / 3))
    rate = (C10**-2 + window**-2) ** -0.5
    q = 1 - 0.99 ** 2
    sent = 14_480 + rate * (0.5 - 0.10 - q * (1 - (2 * q) ** 6) / (1 - 2 * q) - 0.10)
    # the lossy link, the path's last, drops 1% before it transmits: it carries 0.99 of the rate
    assert s.links["fl_server-s1"]["utilization"] == pytest.approx(sent / 0.5 / C10)
    assert s.links["client_1-s1"]["utilization"] == pytest.approx(sent / 0.5 * 0.99 / C10)
    assert s.bandwidth_utilization == pytest.approx(sent / 0.5 * 0.995 / C10)
    assert instant.links["fl_server-s1"]["utilization"] == pytest.approx(rate / C10)


def test_utilisation_is_the_share_carried_over_the_interval_including_idle_time_and_capacity_changes():
    """10 Mbit/s link: 1 s of a transfer at full rate, then idle; bandwidth halved for the idle part.
    From 0 to 4 s the link could carry C10 * 2 + C10 / 2 * 2 bytes and carried C10 (1 s at full
    rate, after a set-up of 1 RTT = 20 ms, a first round trip of slow start that sends 14,480 B, and
    with a 10 ms tail)."""
    net, clock = network(clients=1, latency=5.0)
    (done,) = net.transfer([Flow("fl_server", "client_1", C10, 0.0)])
    assert done == pytest.approx(0.020 + 0.020 + (C10 - 14_480) / C10 + 0.010)
    clock.advance_to(2.0)
    net.apply(Condition(("client_1-s1", "fl_server-s1"), bandwidth_mbps=5))
    clock.advance_to(4.0)
    s = net.stats()
    assert s.links["client_1-s1"]["utilization"] == pytest.approx(C10 / (2 * C10 + C10 / 2 * 2))
    clock.advance_to(5.0)
    assert net.stats().bandwidth_utilization == 0.0


conditions = st.builds(
    Condition,
    links=st.lists(st.sampled_from(["fl_server-s1", "client_1-s2", "client_2-s3", "s1-s2", "s1-s3"]),
                   min_size=1, unique=True).map(tuple),
    extra_delay_ms=st.floats(0, 100), loss=st.floats(0, 0.5), bandwidth_mbps=st.none() | st.floats(0.1, 50),
    down=st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(conditions, max_size=6), st.randoms())
def test_reverting_every_condition_restores_the_network_exactly(conds, rnd):
    net, _ = network(clients=2, switches=3, latency=7.0)
    before = dict(net.links)
    routes = net.controller.route("client_1", "fl_server")
    handles = [net.apply(c) for c in conds]
    rnd.shuffle(handles)
    for h in handles:
        net.revert(h)
    assert net.links == before
    assert net.controller.route("client_1", "fl_server") == routes


def test_overlapping_conditions_compose():
    net, _ = network(clients=1, latency=10.0)
    a = net.apply(Condition(("client_1-s1",), extra_delay_ms=30, loss=0.1, bandwidth_mbps=5))
    net.apply(Condition(("client_1-s1",), extra_delay_ms=20, loss=0.2, bandwidth_mbps=8))
    link = net.links["client_1-s1"]
    assert (link.delay_ms, link.loss, link.bw_mbps) == (60.0, pytest.approx(1 - 0.9 * 0.8), 5.0)
    net.revert(a)
    link = net.links["client_1-s1"]
    assert (link.delay_ms, link.loss, link.bw_mbps) == (30.0, pytest.approx(0.2), 8.0)


# -- topologies ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, switches, links, server_switch", [
    ("star", 3, 7 + 2, "s1"),   # 7 hosts + 2 access-to-core trunks
    ("mesh", 4, 7 + 6, "s1"),   # 7 hosts + C(4, 2) trunks
    ("tree", 5, 7 + 4, "s1"),   # 7 hosts + 4 parent links
])
def test_topology_builders(kind, switches, links, server_switch):
    config = ScenarioConfig(name="t", network_config=NetworkConfig(topology_type=kind, node_count=7,
                                                                   switch_count=switches))
    topo = build_topology(config)
    assert len(topo.hosts) == 7 and len(topo.switches) == switches and len(topo.links) == links
    assert topo.links_of("fl_server") == [f"fl_server-{server_switch}"]
    assert topo.clients == [f"client_{i}" for i in range(1, 7)]
    assert nx.is_connected(topo.graph)


def test_tree_puts_clients_on_leaf_switches():
    config = ScenarioConfig(name="t", network_config=NetworkConfig(topology_type="tree", node_count=7,
                                                                   switch_count=5))
    topo = build_topology(config)
    leaves = {"s3", "s4", "s5"}
    assert all(set(topo.graph.neighbors(c)) <= leaves for c in topo.clients)


def test_idle_hosts_fill_up_to_node_count():
    from pytest_flopynet import FLConfig
    config = ScenarioConfig(name="t", fl_config=FLConfig(client_data_sizes=[10, 10], clients_per_round=2),
                            network_config=NetworkConfig(node_count=5))
    assert build_topology(config).hosts == ["fl_server", "client_1", "client_2", "host_1", "host_2"]


def test_custom_topology_from_a_node_link_file(tmp_path):
    import json

    from pytest_flopynet import FLConfig
    g = nx.Graph()
    g.add_edge("fl_server", "core", bw_mbps=1000, delay_ms=1)
    g.add_edge("core", "edge")
    g.add_edge("client_1", "edge", delay_ms=25)
    (tmp_path / "topo.json").write_text(json.dumps(nx.node_link_data(g, edges="links")))
    config = ScenarioConfig(name="c", fl_config=FLConfig(client_data_sizes=[10], clients_per_round=1),
                            network_config=NetworkConfig(topology_type="custom", custom_topology_file="topo.json",
                                                         node_count=2, link_bandwidth_mbps=50, base_latency_ms=4))
    topo = build_topology(config, base_dir=tmp_path)
    assert sorted(topo.switches) == ["core", "edge"]
    assert topo.link("fl_server", "core").bw_mbps == 1000 and topo.link("core", "edge").bw_mbps == 50
    assert topo.link("client_1", "edge").delay_ms == 25 and topo.link("core", "edge").delay_ms == 4


def test_custom_topology_without_a_client_is_a_clear_error(tmp_path):
    import json

    from pytest_flopynet.network.topology import TopologyError
    g = nx.Graph([("fl_server", "s1")])
    (tmp_path / "t.json").write_text(json.dumps(nx.node_link_data(g, edges="links")))
    config = ScenarioConfig(name="c", network_config=NetworkConfig(topology_type="custom", node_count=3,
                                                                   custom_topology_file="t.json"))
    with pytest.raises(TopologyError, match=r"t.json: the topology lacks hosts client_1, client_2"):
        build_topology(config, base_dir=tmp_path)


def test_the_server_reaches_a_population_through_one_tree_and_uploads_take_the_download_path_back():
    net, _ = network("mesh", clients=6, switches=4, latency=1.0)
    controller = net.controller
    before = controller.stats["route_computations"]
    reached = net.reachable("fl_server")
    assert {f"client_{i}" for i in range(1, 7)} <= reached and "fl_server" in reached
    for i in range(1, 7):
        down, up = controller.route("fl_server", f"client_{i}"), controller.route(f"client_{i}", "fl_server")
        assert [name for name, _ in up] == [name for name, _ in down][::-1]  # the same links, reversed
        path = nx.shortest_path(net.topology.graph, "fl_server", f"client_{i}", weight=lambda a, b, d: 1.0)
        assert len(down) == len(path) - 1  # equal delays: the fewest hops
    assert controller.stats["route_computations"] == before + 12  # one per (src, dst), all from one tree
    net.apply(Condition(tuple(net.topology.links_of("client_3")), down=True))
    assert "client_3" not in net.reachable("fl_server") and "client_2" in net.reachable("fl_server")
    assert controller.route("client_3", "fl_server") is None
