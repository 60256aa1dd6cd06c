"""network/flows.py's TCP arithmetic against the published formulas it implements, worked by hand."""
import math

import pytest

from pytest_flopynet.network import flows
from pytest_flopynet.network.flows import (backoff, goodput, handshake_seconds, max_min_rates, sawtooth,
                                           share_weight, stall_per_byte, timeouts_per_lost_segment, window_rate)


def test_padhyes_window_term_for_reno():
    # MSS / (RTT sqrt(2bp/3)), b = 1 (Linux counts ACKed segments): RTT 100 ms, p = 1% ->
    # 1448 / (0.1 * 0.0816497) = 177,343 B/s, Mathis's 1.2247 MSS / (RTT sqrt(p))
    assert window_rate("reno", 0.100, 0.01) == pytest.approx(177_343.06, rel=1e-6)
    assert window_rate("reno", 0.100, 0.0) == math.inf


def test_the_sawtooth_is_the_l2_smooth_minimum_of_share_and_window():
    # (3^-2 + 4^-2)^(-1/2) = (25 / 144)^(-1/2) = 12 / 5
    assert sawtooth(3.0, 4.0) == pytest.approx(2.4)
    assert sawtooth(3.0, math.inf) == 3.0 and sawtooth(math.inf, 4.0) == 4.0
    assert sawtooth(0.0, 4.0) == 0.0


def test_cubic_takes_the_larger_of_reno_and_its_own_response_function():
    # RFC 9438: W = (C (3 + beta) / (4 (1 - beta)))^(1/4) RTT^(3/4) / p^(3/4), C = 0.4, beta = 0.7: the factor is
    # 1.2333^(1/4) = 1.053829. RTT 300 ms, p = 1%: 1448 * 1.05381 * 0.3^-0.25 * 0.01^-0.75 = 65,200 B/s, above
    # Reno's 59,114 B/s; at 100 ms cubic's 85,800 B/s is below Reno's 177,343 B/s (the Reno-friendly region)
    assert window_rate("cubic", 0.300, 0.01) == pytest.approx(1448 * 1.053829 * 1.351207 * 31.622777, rel=1e-5)
    assert window_rate("reno", 0.300, 0.01) == pytest.approx(59_114.35, rel=1e-6)
    assert window_rate("cubic", 0.100, 0.01) == pytest.approx(177_343.06, rel=1e-6)


def test_bbr_has_no_window_cap_and_no_stalls_under_random_loss():
    assert window_rate("bbr", 0.3, 0.05) == math.inf
    assert stall_per_byte("bbr", 0.3, 0.05, 1e6) == 0.0
    assert goodput(1e6, 0.05, stall_per_byte("bbr", 0.001, 0.05, 1e6)) == pytest.approx(0.95e6)


def test_padhyes_backoff_factor():
    # f(p) = 1 + p + 2p^2 + 4p^3 + 8p^4 + 16p^5 + 32p^6 at p = 0.1: 1.124992
    assert backoff(0.1) == pytest.approx(1.124992)
    assert backoff(0.0) == 1.0


def test_timeouts_per_lost_segment_interpolate_the_measured_table():
    table = dict(flows.TIMEOUTS_PER_LOST_SEGMENT)
    assert timeouts_per_lost_segment(0.01) == 0.0  # none at 1%, half of the 2% figure at 1.5%
    assert timeouts_per_lost_segment(0.015) == pytest.approx(table[0.02] / 2)
    assert timeouts_per_lost_segment(0.05) == pytest.approx(table[0.05])
    # halfway between 5% and 7% in p: the geometric mean of the two
    assert timeouts_per_lost_segment(0.06) == pytest.approx(math.sqrt(table[0.05] * table[0.07]))
    assert timeouts_per_lost_segment(0.5) == 1.0  # extrapolated, at most every lost segment


def test_the_stall_of_a_cubic_flow_at_5_percent_loss_worked_by_hand():
    # p / (1 - p) lost segments per delivered one, each a timeout with probability Q, of RTO = RTT + 200 ms
    # times f(0.05) = 1.0555555, per byte of 1448. Q(5%) = 0.035 at 50 Mbit/s and 0.3 ms; elsewhere its odds,
    # 0.035 / 0.965 = 0.0362694, go with the square root of the BDP over that one:
    f = 1 + 0.05 + 2 * 0.05**2 + 4 * 0.05**3 + 8 * 0.05**4 + 16 * 0.05**5 + 32 * 0.05**6
    c10 = 10e6 / 8 * 1448 / 1514

    def q(odds: float) -> float:
        return odds / (1 + odds)
    # 10 Mbit/s at 0.3 ms: odds x (10 / 50)^0.5 = 0.0162202, Q = 0.0159613
    per_byte = 0.05 / 0.95 * q(0.0362694 * math.sqrt(0.2)) * 0.2003 * f / 1448
    assert stall_per_byte("cubic", 0.0003, 0.05, c10) == pytest.approx(per_byte, rel=1e-5)
    assert stall_per_byte("cubic", 0.0, 0.05, c10) == pytest.approx(per_byte / 0.2003 * 0.2, rel=1e-5)  # floor 0.3 ms
    # at 100 ms the BDP is 333.3 times larger: odds x (0.2 x 333.3)^0.5 = 0.296139, Q = 0.228478, RTO 0.3 s
    assert stall_per_byte("reno", 0.1, 0.05, c10) == pytest.approx(0.05 / 0.95 * 0.228478 * 0.3 * f / 1448, rel=1e-5)
    # at 10%, Q(10%) = 0.193: odds 0.239157 x 8.16497 = 1.952702, Q = 0.661328 (on Q itself it would pass 1)
    assert stall_per_byte("cubic", 0.1, 0.1, c10) == pytest.approx(0.1 / 0.9 * 0.661328 * 0.3 * backoff(0.1) / 1448,
                                                                   rel=1e-5)
    # sending its share of C it delivers 0.95 C and idles per_byte seconds per byte delivered
    assert goodput(c10, 0.05, per_byte) == pytest.approx(1 / (1 / (0.95 * c10) + per_byte))


def test_cardwells_handshake_with_syn_timeouts():
    # 1 RTT, and with q = 1 - (1 - 0.05)^2 = 0.0975 of SYN or SYN-ACK lost: Ts q / (1 - 2q) over six
    # retries, Ts q (1 - (2q)^6) / (1 - 2q) = 0.121111 s
    assert handshake_seconds(0.010, 0.05, 0.05) == pytest.approx(0.010 + 0.0975 * (1 - 0.195**6) / 0.805)
    assert handshake_seconds(0.010, 0.0, 0.0) == pytest.approx(0.010)
    # past q = 1/2 the series would diverge; six tries bound it: q = 0.75 -> 0.75 + 1.125 + ... = 15.6 s
    assert handshake_seconds(0.0, 0.5, 0.5) == pytest.approx(sum(0.75**k * 2 ** (k - 1) for k in range(1, 7)))


def test_loss_based_flows_share_by_rtt_and_bbr_flows_equally():
    # weights 1 / (RTT + 1 ms): 10 ms and 40 ms -> 1/0.011 : 1/0.041; the link of 10 splits 7.885 : 2.115
    w = {"near": share_weight("cubic", 0.010), "far": share_weight("cubic", 0.040)}
    rates = max_min_rates({"near": ["L"], "far": ["L"]}, {"L": 10.0}, weights=w)
    assert rates["near"] == pytest.approx(10 * 0.041 / (0.041 + 0.011))
    assert rates["far"] == pytest.approx(10 * 0.011 / (0.041 + 0.011))
    assert share_weight("bbr", 0.010) == share_weight("bbr", 0.040)


def test_weighted_filling_still_gives_capped_flows_share_to_the_others():
    rates = max_min_rates({"a": ["L"], "b": ["L"], "c": ["L"]}, {"L": 9.0}, caps={"a": 1.0},
                          weights={"a": 1.0, "b": 1.0, "c": 2.0})
    assert rates == pytest.approx({"a": 1.0, "b": 8 / 3, "c": 16 / 3})


def test_links_past_a_loss_carry_only_what_survived_it():
    # two flows share L2, which comes after each one's lossy link: sending r, L2 carries r (1 - 0.2); so the
    # flows may send 10 / (2 * 0.8) = 6.25 each into a link of 10 (their own links, of 8, are not full)
    rates = max_min_rates({"a": ["L1a", "L2"], "b": ["L1b", "L2"]}, {"L1a": 8.0, "L1b": 8.0, "L2": 10.0},
                          usage={("a", "L2"): 0.8, ("b", "L2"): 0.8})
    assert rates == pytest.approx({"a": 6.25, "b": 6.25})
