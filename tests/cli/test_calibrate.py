"""flopynet calibrate: the simulated network's arithmetic worked by hand, the command's output, and one
lossless cell against real TCP on the netns backend."""
import json
import subprocess
import sys

import pytest

from pytest_flopynet.commands.calibrate import calibrate

MB = 1_000_000


def simulated_seconds(nbytes: int, mbps: float, rtt_s: float, flows: int = 1) -> float:
    """The sim's model: connection set-up 1.5 RTT, then the bytes at max-min fair TCP goodput (1448 payload
    bytes per 1514-byte frame) sharing the bottleneck, then the last byte's half RTT."""
    return 1.5 * rtt_s + nbytes * 8 / (mbps * 1e6 / flows * 1448 / 1514) + rtt_s / 2


@pytest.mark.parametrize("flows", [1, 3])
def test_sim_times_follow_the_model_worked_by_hand(flows):
    result = calibrate("sim", nbytes=MB, bandwidth_mbps=10, rtt_ms=4, loss=0.0, flows=flows)
    expected = simulated_seconds(MB, 10, 0.004, flows)  # 1 flow: 0.006 + 0.836464 + 0.002 s
    assert result["seconds"] == pytest.approx(expected, rel=1e-9)
    assert result["per_flow_seconds"] == pytest.approx([expected] * flows, rel=1e-9)
    assert result["goodput_mbps"] == pytest.approx(flows * 8 / expected, rel=1e-9)


def test_sim_ignores_loss_below_the_mathis_bound_today():
    """What issue 21 is about: at 1 ms RTT the Mathis bound (MSS / RTT * 1.22 / sqrt(p) = 7.9 MB/s at
    5%) is far above 10 Mbit/s, so 5% loss costs the simulation nothing."""
    lossy = calibrate("sim", nbytes=MB, bandwidth_mbps=10, rtt_ms=1, loss=0.05)
    assert lossy["seconds"] == pytest.approx(simulated_seconds(MB, 10, 0.001), rel=1e-9)


def test_the_command_prints_a_line_or_json_and_refuses_bad_values_in_one_line(tmp_path):
    cli = [sys.executable, "-m", "pytest_flopynet.cli", "calibrate", "--bytes", str(MB), "--bandwidth-mbps", "10",
           "--rtt-ms", "4"]
    line = subprocess.run(cli, capture_output=True, text=True)
    assert line.returncode == 0, line.stderr
    assert line.stdout.strip() == ("1 flow of 1000000 bytes over 10 Mbit/s, 4 ms RTT, 0.0% loss on sim: 0.844 s, "
                                   "goodput 9.47 Mbit/s")
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


def test_one_lossless_flow_on_netns_takes_the_simulated_time_within_3_percent():
    from pytest_flopynet.errors import UnavailableError
    from pytest_flopynet.network.lab import unavailable
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    try:
        real = calibrate("netns", nbytes=MB, bandwidth_mbps=10, rtt_ms=1, loss=0.0)
    except UnavailableError as exc:
        pytest.skip(str(exc))
    assert real["seconds"] == pytest.approx(simulated_seconds(MB, 10, 0.001), rel=0.03)
