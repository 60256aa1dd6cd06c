"""Every event type's effect, in numbers worked out by hand from the time model."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig, ScenarioEvent, run_scenario
from pytest_flopynet.controller import Controller
from pytest_flopynet.engine.clock import VirtualClock
from pytest_flopynet.engine.events import HANDLERS, EventContext
from pytest_flopynet.model import event_duration
from pytest_flopynet.network import build_topology
from pytest_flopynet.network.sim import SimNetwork
from pytest_flopynet.policy import PolicyEngine

C = lambda mbps: mbps * 1e6 / 8 * 1448 / 1514  # noqa: E731  payload bytes/s of a link
LOGREG_BYTES = 4 * (64 * 10 + 10)
LOGREG_TRAIN_FLOPS = 3 * 2 * 64 * 10  # per sample: 3 x forward FLOPs


def config(clients=3, rounds=3, events=(), bw=10.0, latency=5.0, gflops=20.0, topology="star", switches=1,
           duration=30, **fl):
    fl_args = dict(model_architecture="logreg", total_rounds=rounds, clients_per_round=clients, learning_rate=0.2,
                   client_data_sizes=[100] * clients, client_compute_gflops=gflops)
    fl_args.update(fl)
    return ScenarioConfig(name="ev", duration_minutes=duration, fl_config=FLConfig(**fl_args),
                          network_config=NetworkConfig(topology_type=topology, node_count=clients + 1,
                                                       switch_count=switches, link_bandwidth_mbps=bw,
                                                       base_latency_ms=latency),
                          events=list(events))


def durations(result):
    return [r["end_time"] - r["start_time"] for r in result.rounds]


def transfer(n_sharing, rtt, mbps=10.0, nbytes=LOGREG_BYTES):
    """n flows sharing the server's link: 1 RTT set-up, n x bytes / C, then one way."""
    return rtt + n_sharing * nbytes / C(mbps) + rtt / 2


def compute(gflops=20.0, samples=100):
    return samples * LOGREG_TRAIN_FLOPS / (gflops * 1e9)


def test_baseline_round_is_the_analytic_time():
    (d, *_) = durations(run_scenario(config(), seed=0))
    assert d == pytest.approx(2 * transfer(3, 0.020) + compute(), rel=1e-6)


def test_latency_increase_lengthens_each_transfer_by_two_extra_rtts():
    ev = ScenarioEvent("network_latency_increase", 0, "all_links", {"latency_increase_ms": 30}, duration=100)
    (d, *_) = durations(run_scenario(config(events=[ev]), seed=0))
    # +30 ms on both links of every path: one way 10 -> 70 ms, RTT 20 -> 140 ms
    assert d == pytest.approx(2 * transfer(3, 0.140) + compute(), rel=1e-6)


def test_latency_on_a_seeded_share_of_the_links():
    ev = ScenarioEvent("network_latency_increase", 0, "all_links",
                       {"latency_increase_ms": 30, "affected_percentage": 0.5}, duration=100)
    result = run_scenario(config(clients=5, events=[ev]), seed=4)
    # 6 links, half of them +30 ms: the mean link latency sampled at t = 0 is 5 + 15 = 20 ms
    assert result.metrics.series("network_latency_ms")[1][0] == pytest.approx(20.0)
    again = run_scenario(config(clients=5, events=[ev]), seed=4)
    assert durations(again) == durations(result)


def test_uniform_packet_loss_caps_flows_at_the_window_rate_and_costs_syn_timeouts():
    ev = ScenarioEvent("network_packet_loss", 0, "client_links", {"packet_loss_rate": 0.01}, duration=100)
    (d, *_) = durations(run_scenario(config(bw=100, events=[ev]), seed=0))
    # RTT 20 ms, p = 1%: cubic's Reno-friendly window rate (Padhye, b = 1: 886,715 B/s), the sawtooth with
    # each flow's share of the server's 100 Mbit/s link, L / 3 downloading and L / 2.97 uploading (the lossy
    # client link drops before the server's link carries); 99% of it delivered; the set-up waits the
    # expected SYN timeouts, Ts q / (1 - 2q); the model's 2,600 B fit in slow start's first window
    window = 1448 / (0.020 * math.sqrt(2 * 0.01 / 3))
    big = 100e6 / 8 * 1448 / 1514
    q = 1 - 0.99 ** 2

    def one(share: float) -> float:
        rate = (share**-2 + window**-2) ** -0.5
        return 0.020 + q * (1 - (2 * q) ** 6) / (1 - 2 * q) + LOGREG_BYTES / (rate * 0.99) + 0.010
    assert d == pytest.approx(one(big / 3) + one(big / 2.97) + compute(), rel=1e-6)


def make_ctx(cfg):
    topo = build_topology(cfg)
    clock = VirtualClock()
    controller = Controller(topo, traffic_prioritization=cfg.network_config.traffic_prioritization)
    net = SimNetwork(clock, controller)
    net.build(topo)
    return EventContext(net, topo, None, PolicyEngine(), controller, clock, seed=1), net, clock


def test_packet_loss_comes_in_bursts_with_the_mean_rate():
    ctx, net, clock = make_ctx(config())
    ev = ScenarioEvent("network_packet_loss", 0, "client_links", {"packet_loss_rate": 0.02, "burst_duration": 5})
    undo = HANDLERS[ev.event_type](ev, ctx, 0)
    step, samples = 0.5, []
    for k in range(1, 40_001):
        clock.advance_to(k * step)
        samples.append(net.links["client_1-s1"].loss)
    assert all(s == 0.0 or s == pytest.approx(0.1) for s in samples)  # bursts at 5 x 2% = 10%, nothing between
    assert sum(samples) / len(samples) == pytest.approx(0.02, rel=0.15)  # long-run mean: 2%
    bursts = sum(1 for a, b in zip(samples, samples[1:]) if a == 0 and b > 0)
    assert sum(s > 0 for s in samples) * step / bursts == pytest.approx(5.0, abs=step)  # each lasts 5 s
    undo()
    assert net.links["client_1-s1"].loss == 0.0 and len(clock.scheduler) == 0


def test_bandwidth_limit_on_the_server_link():
    ev = ScenarioEvent("network_bandwidth_limit", 0, "server_links", {"bandwidth_limit_mbps": 1}, duration=100)
    (d, *_) = durations(run_scenario(config(events=[ev]), seed=0))
    # the 3 flows share the server's 1 Mbit/s link in both directions
    assert d == pytest.approx(2 * transfer(3, 0.020, mbps=1) + compute(), rel=1e-6)


def test_link_failure_on_a_mesh_reroutes_and_the_round_completes():
    ev = ScenarioEvent("link_failure", 0, "s1-s2")
    result = run_scenario(config(clients=1, topology="mesh", switches=3, events=[ev]), seed=0)
    assert result.rounds_completed == 3
    # client_1 - s2 - s3 - s1 - fl_server instead of client_1 - s2 - s1 - fl_server: four 5 ms links
    assert durations(result)[0] == pytest.approx(2 * transfer(1, 0.040) + compute(), rel=1e-6)


def test_a_failure_the_controller_detects_late_stalls_traffic_until_the_reroute():
    ctx, net, clock = make_ctx(config(clients=1, topology="mesh", switches=3, latency=0.0))
    from pytest_flopynet.network import Flow
    ev = ScenarioEvent("link_failure", 0.5, "s1-s2", {"detection_delay": 2.0})
    clock.scheduler.at(0.5, lambda: HANDLERS[ev.event_type](ev, ctx, 0))
    (done,) = net.transfer([Flow("client_1", "fl_server", C(10), 0.0)])
    assert done == pytest.approx(3.0)  # 0.5 s of data, 2 s stalled, then the other 0.5 s on the new path
    assert ctx.controller.stats["reroutes"] == 1


def participants(result):
    """(start, clients selected) per round; one that goes away mid-round is selected but a straggler."""
    return [(r["start_time"], set(r["participants"]) | set(r["stragglers"])) for r in result.rounds]


SLOW = dict(clients=4, rounds=400, gflops=0.001, duration=10)  # rounds of ~0.4 s of scenario time


def test_client_join_and_leave():
    join = ScenarioEvent("client_join", 60, "client_3")
    leave = ScenarioEvent("client_leave", 120, "client_group", {"clients": ["client_1", "client_2"]}, duration=60)
    result = run_scenario(config(**SLOW, events=[join, leave]), seed=0)
    for start, who in participants(result):
        assert ("client_3" in who) == (start >= 60)
        assert ("client_1" in who) == ("client_2" in who) == (not 120 <= start < 180)


def test_hard_failure_and_recovery():
    ev = ScenarioEvent("client_failure", 100, "client_2", {"failure_type": "hard_failure", "recovery_time": 50})
    result = run_scenario(config(**SLOW, events=[ev]), seed=0)
    for start, who in participants(result):
        assert ("client_2" in who) == (not 100 <= start < 150)
    crossing = next(r for r in result.rounds if r["start_time"] < 100 < r["end_time"])
    assert "client_2" in crossing["stragglers"]  # its update was lost with it


def test_intermittent_clients_reconnect_with_the_given_probability():
    ev = ScenarioEvent("client_failure", 0, "client_2",
                       {"failure_type": "intermittent", "reconnect_probability": 0.3}, duration=600)
    result = run_scenario(config(**{**SLOW, "rounds": 200}, events=[ev]), seed=0)
    share = sum("client_2" in who for _, who in participants(result)) / result.rounds_completed
    assert result.rounds_completed == 200
    assert share == pytest.approx(0.3, abs=0.1)  # binomial: 3 standard deviations for 200 rounds


def test_resource_constraint_slows_compute_by_its_factor():
    ev = ScenarioEvent("resource_constraint", 0, "client_1", {"cpu_slowdown_factor": 4}, duration=100)
    base = durations(run_scenario(config(gflops=0.001), seed=0))[0]
    slow = durations(run_scenario(config(gflops=0.001, events=[ev]), seed=0))[0]
    c, rtt = compute(0.001), 0.020
    d = transfer(3, rtt)
    assert base == pytest.approx(d + c + transfer(3, rtt), rel=1e-6)
    # client_1 trains 4 c; the other two upload together meanwhile; then client_1 uploads alone
    assert slow == pytest.approx(d + 4 * c + transfer(1, rtt), rel=1e-6)


def test_a_memory_cap_below_the_training_footprint_excludes_the_client():
    # logistic regression: 4 x 2600 B of model state + 100 x (64 x 4 + 8) B of data = 36,800 B = 0.0351 MiB
    too_small = ScenarioEvent("resource_constraint", 0, "client_1", {"memory_limit_mb": 0.035}, duration=50)
    enough = ScenarioEvent("resource_constraint", 0, "client_2", {"memory_limit_mb": 0.036}, duration=50)
    result = run_scenario(config(**SLOW, events=[too_small, enough]), seed=0)
    for start, who in participants(result):
        assert ("client_1" in who) == (start >= 50)
        assert "client_2" in who


@pytest.mark.parametrize("prioritised", [False, True])
def test_ddos_lengthens_rounds_unless_fl_traffic_is_prioritised(prioritised):
    ev = ScenarioEvent("security_event", 0, "fl_server",
                       {"attack_type": "ddos", "request_rate_multiplier": 10, "attack_duration": 500})
    cfg = config(clients=10, events=[ev])
    cfg.network_config.traffic_prioritization = prioritised
    result = run_scenario(cfg, seed=0)
    down = transfer(10, 0.020)  # the flood runs client -> server: downloads are untouched
    if prioritised:  # FL flows are served first on every link: the round is as without the attack
        expected = down + compute() + transfer(10, 0.020)
    else:  # 10 FL uploads and 10 x 10 flood flows share the server's link max-min fairly
        expected = down + compute() + transfer(110, 0.020)
    assert durations(result)[0] == pytest.approx(expected, rel=1e-6)
    assert result.metrics.series("security_events")[1][0] == 1


def test_gaussian_noise_poisoning_breaks_fedavg():
    mlp = dict(clients=10, rounds=20, model_architecture="mlp", model_parameters={"hidden_layers": [64]},
               learning_rate=0.2, local_epochs=2)
    base = run_scenario(config(**mlp), seed=0)
    ev = ScenarioEvent("model_poisoning", 0, "client_group",
                       {"attack_type": "gaussian_noise", "noise_std": 10, "clients": ["client_1", "client_2",
                                                                                      "client_3"]})
    poisoned = run_scenario(config(**mlp, events=[ev]), seed=0)
    assert base.final_accuracy > 0.9 and poisoned.final_accuracy < base.final_accuracy - 0.3


def test_label_drift_on_every_client_teaches_the_wrong_labels():
    ev = ScenarioEvent("data_drift", 0, "client_group",
                       {"drift_type": "label_shift", "severity": 1.0, "clients": ["client_1", "client_2", "client_3"]})
    result = run_scenario(config(rounds=10, events=[ev]), seed=0)
    clean = run_scenario(config(rounds=10), seed=0)
    assert clean.final_accuracy > 0.75 and result.final_accuracy < 0.2


def test_anomaly_detection_switched_on_mid_run_quarantines_the_attackers():
    attack = ScenarioEvent("model_poisoning", 0, "client_group",
                           {"attack_type": "gaussian_noise", "noise_std": 10, "clients": ["client_4", "client_9"]})
    policy = ScenarioEvent("policy_change", 20, "policy_engine",
                           {"policy_name": "strict_anomaly_detection", "detection_threshold": 0.05,
                            "quarantine_duration": 300})
    mlp = dict(clients=10, rounds=50, gflops=0.001, model_architecture="mlp", model_parameters={"hidden_layers": [64]},
               learning_rate=0.2, local_epochs=2)  # rounds of ~6 s of scenario time
    result = run_scenario(config(**mlp, events=[attack, policy]), seed=0)
    unguarded = run_scenario(config(**mlp, events=[attack]), seed=0)
    pm = result.analysis["policy_metrics"]
    assert pm["attack_detection_rate"] >= 0.9 and pm["false_positive_rate"] <= 0.1
    flagged = [c for r in result.rounds for c in r["rejected"]]
    for client, trust in pm["client_trust_scores"].items():  # trust <- 0.8 trust + 0.2 [not flagged]
        assert trust == pytest.approx(0.8 ** flagged.count(client))
    assert flagged.count("client_4") == flagged.count("client_9") >= 1
    before = [r for r in result.rounds if r["end_time"] < 20]
    assert before and max(r["accuracy"] for r in before) < 0.5  # poisoned FedAvg
    late = [r for r in result.rounds if r["start_time"] > 25]
    assert all({"client_4", "client_9"}.isdisjoint(r["participants"]) for r in late if r["start_time"] < 320)
    # recovered once the attackers were quarantined; without the policy FedAvg stays damaged
    assert result.final_accuracy >= 0.8 and result.final_accuracy >= unguarded.final_accuracy + 0.1
    assert result.analysis["execution_summary"]["total_policy_violations"] >= 2


DATA = __import__("pathlib").Path(__file__).parents[1] / "data"


def test_the_seeds_network_instability_events_run_unchanged():
    from pytest_flopynet import load_scenario
    result = run_scenario(load_scenario(DATA / "network_instability_ci.yaml"), seed=0)
    assert result.state == "completed" and result.rounds_completed == 30
    assert [(e["event_type"], e["start_time"], e["end_time"]) for e in result.events] == [
        ("network_latency_increase", 300, 480), ("network_packet_loss", 600, 720),
        ("network_bandwidth_limit", 900, 1140), ("network_partition", 1200, 1290)]
    latency = dict(zip(*result.metrics.series("network_latency_ms")))
    # mesh of 4 switches (6 trunks) and 8 hosts (server, 6 clients, 1 idle): 14 links, 7 of them + 30 ms
    assert latency[290.0] == 20.0 and latency[300.0] == pytest.approx(20 + 30 * 7 / 14) and latency[490.0] == 20.0
    loss = dict(zip(*result.metrics.series("network_packet_loss")))
    assert max(loss[t] for t in loss if 600 <= t < 720) > 0 and loss[590.0] == loss[730.0] == 0.0
    for r in result.rounds:
        if r["end_time"] <= 1200 or r["start_time"] >= 1290:
            assert {"client_1", "client_2"} <= set(r["participants"])
        elif r["start_time"] >= 1200:
            assert {"client_1", "client_2"}.isdisjoint(r["participants"] + r["stragglers"])
    crossing = next(r for r in result.rounds if r["start_time"] < 1200 < r["end_time"])
    assert crossing["stragglers"] == ["client_1", "client_2"]  # the server's 60 s round timeout
    assert result.final_accuracy >= 0.85


def test_the_seeds_adversarial_events_run_unchanged():
    from pytest_flopynet import load_scenario
    with pytest.warns(UserWarning, match="node_count is 12 but the scenario has 12 clients"):
        config = load_scenario(DATA / "adversarial_attacks_ci.yaml")
    result = run_scenario(config, seed=0)
    assert result.state == "completed" and result.rounds_completed == 40
    assert [(e["event_type"], e["start_time"], e["end_time"]) for e in result.events] == [
        ("model_poisoning", 480, 1080), ("model_poisoning", 720, 1200), ("policy_change", 900, None),
        ("security_event", 1800, 1920)]
    pm = result.analysis["policy_metrics"]
    assert pm["active_policy"] == "strict_anomaly_detection"
    assert pm["attack_detection_rate"] == 1.0 and pm["false_positive_rate"] <= 0.1
    security = dict(zip(*result.metrics.series("security_events")))
    assert security[1800.0] >= 1  # the DDoS
    assert result.final_accuracy >= 0.8


# -- composition -------------------------------------------------------------------------------

NETWORK_EVENTS = st.one_of(
    st.builds(lambda t, d, ms, p: ScenarioEvent("network_latency_increase", t, "all_links",
                                                {"latency_increase_ms": ms, "affected_percentage": p}, d),
              st.floats(0, 50), st.floats(0.1, 50), st.floats(0, 100), st.floats(0.1, 1)),
    st.builds(lambda t, d, p, b: ScenarioEvent("network_packet_loss", t, "client_links",
                                               {"packet_loss_rate": p, **({"burst_duration": b} if b else {})}, d),
              st.floats(0, 50), st.floats(0.1, 50), st.floats(0, 0.3), st.none() | st.floats(0.5, 5)),
    st.builds(lambda t, d, bw: ScenarioEvent("network_bandwidth_limit", t, "server_links",
                                             {"bandwidth_limit_mbps": bw}, d),
              st.floats(0, 50), st.floats(0.1, 50), st.floats(0.1, 50)),
    st.builds(lambda t, d: ScenarioEvent("network_partition", t, "client_group",
                                         {"partitioned_clients": ["client_1"], "partition_duration": d}),
              st.floats(0, 50), st.floats(0.1, 50)),
    st.builds(lambda t, d, link, delay: ScenarioEvent("link_failure", t, link, {"detection_delay": delay}, d),
              st.floats(0, 50), st.floats(0.1, 50), st.sampled_from(["s1-s2", "s2-s3", "client_2-s3"]),
              st.floats(0, 5)),
    st.builds(lambda t, d, k: ScenarioEvent("security_event", t, "fl_server",
                                            {"attack_type": "ddos", "request_rate_multiplier": k, "attack_duration": d}),
              st.floats(0, 50), st.floats(0.1, 50), st.integers(1, 5)),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(NETWORK_EVENTS, max_size=8))
def test_any_set_of_events_once_ended_leaves_the_network_as_it_started(events):
    ctx, net, clock = make_ctx(config(clients=3, topology="mesh", switches=3))
    before = (dict(net.links), net.stats().links, net.controller.route("client_2", "fl_server"))
    for i, ev in enumerate(events):
        def start(ev=ev, i=i):
            undo = HANDLERS[ev.event_type](ev, ctx, i)
            clock.scheduler.at(clock.now() + event_duration(ev), undo)
        clock.scheduler.at(ev.trigger_time, start)
    clock.advance_to(200.0)
    net.stats()  # utilisation is averaged since the previous sample: a second later it reads as at the start
    clock.advance_to(201.0)
    assert (dict(net.links), net.stats().links, net.controller.route("client_2", "fl_server")) == before
    assert len(clock.scheduler) == 0


def test_the_backend_gets_jitter_and_stopped_hosts_and_each_end_takes_back_exactly_its_condition():
    """What real backends act on (netem jitter, GNS3's delay filter; killing a client's processes)."""
    class Recording(SimNetwork):
        def __init__(self, *a):
            super().__init__(*a)
            self.applied, self.reverted = {}, []

        def apply(self, condition):
            handle = super().apply(condition)
            self.applied[handle] = condition
            return handle

        def revert(self, handle):
            self.reverted.append(handle)
            super().revert(handle)

    cfg = config()
    topo, clock = build_topology(cfg), VirtualClock()
    backend = Recording(clock, Controller(topo))
    backend.build(topo)
    from pytest_flopynet.fl.cluster import FLCluster
    ctx = EventContext(backend, topo, FLCluster(cfg, 0), PolicyEngine(), backend.controller, clock, 0)
    spike = ScenarioEvent("network_latency_increase", 0, "client_1", {"latency_increase_ms": 40, "jitter_ms": 7})
    crash = ScenarioEvent("client_failure", 0, "client_2", {"failure_type": "hard_failure", "recovery_time": 5})
    undo_spike = HANDLERS[spike.event_type](spike, ctx, 0)
    undo_crash = HANDLERS[crash.event_type](crash, ctx, 1)
    (h1, c1), (h2, c2) = backend.applied.items()
    assert (c1.links, c1.extra_delay_ms, c1.jitter_ms) == (("client_1-s1",), 40.0, 7.0)
    assert c2.hosts_down == ("client_2",) and not c2.links and ctx.cluster.clients["client_2"].away
    undo_crash()
    undo_spike()
    assert backend.reverted == [h2, h1] and not ctx.cluster.clients["client_2"].away
