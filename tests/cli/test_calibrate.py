"""flopynet calibrate: the simulated network's arithmetic worked by hand, the command's output, and one
lossless cell against real TCP on the netns backend."""
import json
import subprocess
import sys
import warnings

import pytest

from pytest_flopynet.commands.calibrate import calibrate

MB = 1_000_000


def simulated_seconds(nbytes: int, mbps: float, rtt_s: float, flows: int = 1) -> float:
    """The sim's model: connection set-up 1 RTT, then the bytes at max-min fair TCP goodput (1448 payload
    bytes per 1514-byte frame) sharing the bottleneck, then the last byte's half RTT."""
    return rtt_s + nbytes * 8 / (mbps * 1e6 / flows * 1448 / 1514) + rtt_s / 2


@pytest.mark.parametrize("flows", [1, 3])
def test_sim_times_follow_the_model_worked_by_hand(flows):
    result = calibrate("sim", nbytes=MB, bandwidth_mbps=10, rtt_ms=4, loss=0.0, flows=flows)
    expected = simulated_seconds(MB, 10, 0.004, flows)  # 1 flow: 0.006 + 0.836464 + 0.002 s
    assert result["seconds"] == pytest.approx(expected, rel=1e-9)
    assert result["per_flow_seconds"] == pytest.approx([expected] * flows, rel=1e-9)
    assert result["goodput_mbps"] == pytest.approx(flows * 8 / expected, rel=1e-9)


def test_sim_charges_loss_by_congestion_control_worked_by_hand():
    """10 Mbit/s, 1 ms RTT, 5% loss. Both pay the SYN timeouts, q / (1 - 2q) s with q = 1 - 0.95^2, and send
    1 / 0.95 bytes per byte delivered; cubic also idles in timeouts: Q(5%) = 0.035, its odds (0.0362694) times
    the BDP's square root over the table's, (10 / 50 x 1 / 0.3)^0.5 = 0.8165: Q = 0.0287614 per lost segment, each RTO = 0.201 s times Padhye's
    f(0.05), and its window's rate, 1448 / (0.001 sqrt(2 x 0.05 / 3)) = 7.93 MB/s, meets the link's c10 in
    the sawtooth's smooth minimum (the lossy link is the path's last: the first carries all it sends)."""
    c10 = 10e6 / 8 * 1448 / 1514
    q = 1 - 0.95 ** 2
    setup = 0.001 + q * (1 - (2 * q) ** 6) / (1 - 2 * q)  # six SYN retries
    bbr = calibrate("sim", nbytes=MB, bandwidth_mbps=10, rtt_ms=1, loss=0.05, congestion_control="bbr")
    assert bbr["seconds"] == pytest.approx(setup + MB / (c10 * 0.95) + 0.0005, rel=1e-9)
    f = 1.0555555
    odds = 0.035 / 0.965 * (2 / 3) ** 0.5
    stall = 0.05 / 0.95 * odds / (1 + odds) * 0.201 * f / 1448  # seconds per byte delivered
    window = 1448 / (0.001 * (2 * 0.05 / 3) ** 0.5)
    rate = (c10**-2 + window**-2) ** -0.5
    cubic = calibrate("sim", nbytes=MB, bandwidth_mbps=10, rtt_ms=1, loss=0.05)
    assert cubic["seconds"] == pytest.approx(setup + MB / (rate * 0.95) + MB * stall + 0.0005, rel=1e-6)
    assert cubic["congestion_control"] == "cubic"
    # the stall adds MB x stall = 0.2218 s and the sawtooth 0.0099 s to bbr's 1.0031 s: 1.231x as long
    assert cubic["seconds"] / bbr["seconds"] == pytest.approx(1.2310, abs=1e-4)


def test_the_command_prints_a_line_or_json_and_refuses_bad_values_in_one_line(tmp_path):
    cli = [sys.executable, "-m", "pytest_flopynet.cli", "calibrate", "--bytes", str(MB), "--bandwidth-mbps", "10",
           "--rtt-ms", "4"]
    line = subprocess.run(cli, capture_output=True, text=True)
    assert line.returncode == 0, line.stderr
    assert line.stdout.strip() == ("1 flow of 1000000 bytes over 10 Mbit/s, 4 ms RTT, 0.0% loss, cubic on sim: 0.842 s, "
                                   "goodput 9.50 Mbit/s")
    piped = subprocess.run([*cli, "--flows", "2", "--json", "-"], capture_output=True, text=True)
    data = json.loads(piped.stdout)
    assert (data["flows"], data["bytes"], data["loss"]) == (2, MB, 0.0)
    assert data["seconds"] == pytest.approx(simulated_seconds(MB, 10, 0.004, 2), rel=1e-9)
    saved = subprocess.run([*cli, "--json", str(tmp_path / "c.json")], capture_output=True, text=True)
    assert json.loads((tmp_path / "c.json").read_text())["seconds"] == pytest.approx(simulated_seconds(MB, 10, 0.004))
    assert saved.stdout.startswith("1 flow of")
    bad = subprocess.run([*cli, "--loss", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1] == \
        "flopynet calibrate: error: argument --loss: 2 is outside 0 to 0.99"


@pytest.fixture(scope="module")
def netns_bottleneck():
    """One netns bottleneck (BBR, as the lossy cell below uses) for the tests of this module."""
    from pytest_flopynet.commands.calibrate import Bottleneck
    from pytest_flopynet.errors import UnavailableError
    from pytest_flopynet.network.lab import unavailable
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    lab = Bottleneck("netns", congestion_control="bbr")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # where netem is missing: "the RTT is the lab's own"
            lab.__enter__()
    except UnavailableError as exc:
        pytest.skip(str(exc))
    try:
        yield lab
    finally:
        lab.__exit__(None, None, None)


def test_one_lossless_flow_on_netns_takes_the_simulated_time_within_3_percent(netns_bottleneck):
    real = netns_bottleneck.measure(MB, 10)
    assert real["seconds"] == pytest.approx(simulated_seconds(MB, 10, netns_bottleneck.rtt_ms / 1000), rel=0.03)


def test_a_lossy_cell_on_netns_takes_the_simulated_time_within_10_percent(netns_bottleneck):
    """BBR, 10 Mbit/s, 5% loss on the bottleneck, 2.5 MB: the median of five real transfers (a lost SYN costs
    one of them a second now and then, which the sim spreads over all as its expectation; three let one
    slow transfer on a busy CI machine move the median 15%) against the sim."""
    lab = netns_bottleneck
    real = sorted(lab.measure(2_500_000, 10, 0.05)["seconds"] for _ in range(5))[2]
    sim = calibrate("sim", nbytes=2_500_000, bandwidth_mbps=10, rtt_ms=lab.rtt_ms, loss=0.05,
                    congestion_control="bbr")["seconds"]
    lossless = calibrate("sim", nbytes=2_500_000, bandwidth_mbps=10, rtt_ms=lab.rtt_ms, loss=0.0)["seconds"]
    assert sim / lossless > 1.09  # the retransmissions (1 / 0.95) and the SYN timeouts
    assert real == pytest.approx(sim, rel=0.10)
