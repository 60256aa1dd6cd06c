"""Flow-level TCP arithmetic: weighted max-min sharing, and what loss, set-up and slow start cost a
transfer under each congestion control. Pure functions; network/sim.py applies them, and
`flopynet calibrate` checks them against real TCP (docs/measurements.md#calibration).

The loss model, for a flow of round-trip time R across a path that drops a share p of its packets:
- every delivered byte costs 1 / (1 - p) bytes on the wire (its retransmissions);
- loss-based control (cubic, reno) also stalls: a lost segment ends in a retransmission timeout
  with probability Q, and each timeout idles the flow for Linux's RTO (srtt + 200 ms, RFC 6298
  with Linux's TCP_RTO_MIN) times Padhye's backoff factor f(p). This is the timeout term of Padhye,
  Firoiu, Towsley & Kurose, "Modeling TCP throughput" (SIGCOMM 1998), eq. 31. Padhye's own
  Q = min(1, 3/w) is for Reno without SACK under bursty loss; on Linux (SACK, RACK-TLP) under random
  loss timeouts are rarer by one to two orders of magnitude, so Q is Linux's, measured: a table in p
  (TIMEOUTS_PER_LOST_SEGMENT, at 50 Mbit/s and 0.3 ms), its odds times the square root of the
  path's bandwidth-delay product over the table's, measured from 0.3 to 300 ms and 5 to 50 Mbit/s;
- the window caps the rate: reno at Padhye's window term MSS / (R sqrt(2bp/3)) with b = 1 (Linux
  grows the window per ACKed segment, RFC 3465, so delayed ACKs do not slow it), cubic at the larger
  of that (its Reno-friendly region, RFC 9438 section 4.3, gives the same average) and its own
  response function (RFC 9438 section 5.1, C = 0.4, beta = 0.7);
- near the bottleneck's rate the window's sawtooth dips below it after every loss: a flow gets the
  L2 smooth minimum of its share and its window's rate, (share^-2 + window^-2)^-1/2 (SAWTOOTH_EXPONENT,
  fitted on a delay line at 2-100 ms, docs/measurements.md#calibration);
- BBR paces at the bottleneck rate it measures and does not back off on random loss (Cardwell et al.,
  "BBR: congestion-based congestion control", ACM Queue 2016): it pays its retransmissions only;
- a connection's set-up waits Linux's initial RTO (1 s, RFC 6298) per lost SYN or SYN-ACK, with
  backoff: E = R + Ts q / (1 - 2q) with q the chance either is lost (Cardwell, Savage & Anderson,
  "Modeling TCP latency", INFOCOM 2000, section 2.1), over Linux's 6 retries;
- slow start: the window starts at 10 segments (RFC 6928) and doubles every round trip until the flow
  reaches its share (Cardwell et al. 2000, section 2.2, without delayed ACKs: Linux quick-acks at start);
  network/sim.py plays it in rounds.
"""
from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Hashable

MSS_BYTES = 1448
# TCP goodput per byte of link capacity with a 1500-byte MTU: 1448 payload bytes per 1514 on the wire.
GOODPUT = 1448 / 1514
INITIAL_WINDOW = 10  # segments, RFC 6928 (Linux's default)
RTO_MIN_S = 0.2  # Linux's TCP_RTO_MIN
SYN_RTO_S = 1.0  # Linux's TCP_TIMEOUT_INIT, RFC 6298's initial RTO
SYN_RETRIES = 6  # Linux's net.ipv4.tcp_syn_retries

# Timeouts per lost segment, Q(p), for loss-based control on Linux 6.18 (SACK, RACK-TLP) under random loss,
# in units of one RTO x f(p), through a 50 Mbit/s bottleneck: the time a cubic flow took beyond sending its
# bytes and their retransmissions at the link's rate and its expected SYN timeouts, over its lost segments,
# over RTO x f(p). Loss probes (TLP) that precede a timeout are in it. Measured through OVS at 0.2-0.3 ms RTT (ping),
# 5-10 transfers of 3 s per point (docs/measurements.md#calibration); at 1% loss no time was lost.
# Interpolated log-linearly in p (linearly from none at 1%), extrapolated past 10%, at most 1.
TIMEOUTS_PER_LOST_SEGMENT = ((0.01, 0.0), (0.02, 5e-4), (0.03, 0.0042), (0.05, 0.035), (0.07, 0.078),
                             (0.10, 0.193))
# Q grows with the path's bandwidth-delay product: at 5, 10 and 20 Mbit/s (0.3 ms) Q was about 0.3, 0.45
# and 0.65 of Q at 50 Mbit/s, (rate / 50 Mbit/s)^0.5, for one flow or two sharing it; through a delay line
# at 5 and 10 Mbit/s, 2-300 ms, the same square root of the BDP (RTT at least 0.3 ms) held, as a factor on
# the odds Q / (1 - Q) (on Q itself it made 10% loss at 10-50 ms 1.45x too slow). No published model we
# know gives this, so it stays a measured factor.
TIMEOUT_REFERENCE_RATE = 50e6 / 8 * GOODPUT
TIMEOUT_REFERENCE_RTT_S = 0.3e-3  # the lab's own RTT (ping) when the table's 5% point was measured
TIMEOUT_RATE_EXPONENT = 0.5
SAWTOOTH_EXPONENT = 2.0  # the smooth minimum's order: 1.5-3 fit the delay line about as well; 2 in the middle


def timeouts_per_lost_segment(loss: float) -> float:
    """Q(p) at 50 Mbit/s for loss-based control: TIMEOUTS_PER_LOST_SEGMENT interpolated log-linearly (from
    none at 1% linearly, at most 1)."""
    table = TIMEOUTS_PER_LOST_SEGMENT
    if loss <= table[0][0]:
        return 0.0
    i = min(max(bisect.bisect_right([p for p, _ in table], loss), 1), len(table) - 1)
    (p0, q0), (p1, q1) = table[i - 1], table[i]
    if q0 == 0.0:  # from none: linearly
        return q1 * (loss - p0) / (p1 - p0)
    return min(1.0, math.exp(math.log(q0) + (math.log(q1) - math.log(q0)) * (loss - p0) / (p1 - p0)))


def backoff(loss: float) -> float:
    """Padhye's f(p): the mean length of a timeout sequence in units of the first RTO (exponential backoff
    while the retransmission is lost again)."""
    p = loss
    return 1 + p + 2 * p**2 + 4 * p**3 + 8 * p**4 + 16 * p**5 + 32 * p**6


def rto_seconds(rtt_s: float) -> float:
    """Linux's retransmission timeout once the RTT is measured: srtt + max(rttvar, 200 ms)."""
    return rtt_s + RTO_MIN_S


def window_rate(cc: str, rtt_s: float, loss: float, mss: int = MSS_BYTES) -> float:
    """The rate (bytes/s) the congestion window allows under loss: Padhye's window-limited term (b = 1) for
    reno, the larger of it and RFC 9438's response function for cubic, none for BBR."""
    if cc == "bbr" or loss <= 0 or rtt_s <= 0:
        return math.inf
    reno = mss / (rtt_s * math.sqrt(2 * loss / 3))
    if cc == "reno":
        return reno
    c, beta = 0.4, 0.7
    cubic = mss * (c * (3 + beta) / (4 * (1 - beta))) ** 0.25 * rtt_s ** -0.25 * loss ** -0.75
    return max(reno, cubic)


def stall_per_byte(cc: str, rtt_s: float, loss: float, link_rate: float, mss: int = MSS_BYTES) -> float:
    """Seconds of timeout a loss-based flow idles per byte it delivers through a bottleneck of `link_rate`
    bytes/s: p / (1 - p) lost segments per segment delivered, each ending in a timeout with probability Q
    (the table's, its odds scaled by the square root of the BDP), of RTO x f(p) seconds."""
    if cc == "bbr" or loss <= 0:
        return 0.0
    bdp = link_rate * max(rtt_s, TIMEOUT_REFERENCE_RTT_S) / (TIMEOUT_REFERENCE_RATE * TIMEOUT_REFERENCE_RTT_S)
    q = timeouts_per_lost_segment(loss)
    if q < 1.0:  # the BDP scales the odds of a timeout, q / (1 - q): a probability that stays below 1
        odds = q / (1 - q) * bdp ** TIMEOUT_RATE_EXPONENT
        q = odds / (1 + odds)
    return loss / (1 - loss) * q * rto_seconds(rtt_s) * backoff(loss) / mss


def sawtooth(share: float, cap: float) -> float:
    """What a loss-based flow gets from its share of the bottleneck and its window's rate: their L2 smooth
    minimum, as the window's dips after each loss idle the link when the two are close (a window
    just above the bandwidth-delay product falls below it after a loss)."""
    if math.isinf(cap):
        return share
    if math.isinf(share):
        return cap
    if share <= 0 or cap <= 0:
        return 0.0
    n = SAWTOOTH_EXPONENT
    return (share ** -n + cap ** -n) ** (-1 / n)


def goodput(rate: float, loss: float, stall: float) -> float:
    """Bytes/s a flow delivers when its share is `rate` bytes/s sent: 1 - p of it, less the time it idles in
    timeouts (stall seconds per byte delivered). Its share is not lent to others while it idles: measured
    with two cubic flows at 50 Mbit/s and 5% loss, each lost as much time as one alone."""
    if rate <= 0 or loss >= 1:
        return 0.0
    if math.isinf(rate):
        return math.inf if not stall else 1.0 / stall
    return 1.0 / (1.0 / (rate * (1 - loss)) + stall)


def handshake_seconds(rtt_s: float, loss_forward: float, loss_back: float) -> float:
    """Set-up until the first data byte leaves: a round trip (SYN, SYN-ACK; the ACK goes with the data), plus
    Cardwell et al.'s expected SYN timeouts, Ts q / (1 - 2q) with q = P(SYN or SYN-ACK lost), summed over
    the tries Linux makes (net.ipv4.tcp_syn_retries = 6): Ts q (1 - (2q)^6) / (1 - 2q), finite at any loss."""
    q = 1 - (1 - loss_forward) * (1 - loss_back)
    waits = sum(q ** k * 2 ** (k - 1) for k in range(1, SYN_RETRIES + 1))
    return rtt_s + SYN_RTO_S * waits


def share_weight(cc: str, rtt_s: float) -> float:
    """How flows of one congestion control share a bottleneck by RTT: loss-based windows grow one segment
    per round trip, so their rates go as 1 / RTT (Lakshman & Madhow, IEEE/ACM ToN 1997; cubic in its
    Reno-friendly region, below about 100 ms); BBR's by its bandwidth probes, RTT-blind to first order.
    A millisecond of queueing is added to the propagation RTT: the queue every flow at the bottleneck sees."""
    return 1.0 if cc == "bbr" else 1.0 / (rtt_s + 1e-3)


def max_min_rates(paths: dict[Hashable, list[Hashable]], capacity: dict[Hashable, float],
                  caps: dict[Hashable, float] | None = None,
                  weights: dict[Hashable, float] | None = None,
                  usage: dict[tuple[Hashable, Hashable], float] | None = None) -> dict[Hashable, float]:
    """Weighted max-min fair rates by progressive filling: raise every unfrozen flow's rate together, in
    proportion to its weight (1 by default), until a resource saturates or a flow reaches its own cap;
    freeze those flows; repeat. usage[(flow, resource)] is the share of a flow's rate that a resource
    carries (1 by default; less past a lossy link, which carried the packets it dropped no further)."""
    caps = caps or {}
    weights = weights or {}
    usage = usage or {}
    rate = {f: 0.0 for f in paths}
    left = dict(capacity)
    users: dict[Hashable, dict] = defaultdict(dict)
    for f, path in paths.items():
        for r in path:
            users[r][f] = usage.get((f, r), 1.0)
    active = {f for f, path in paths.items() if path or f in caps}
    for f in set(paths) - active:
        rate[f] = math.inf  # a flow that crosses nothing is not limited by the network
    w = {f: weights.get(f, 1.0) for f in paths}
    while active:
        step = math.inf  # in rate per unit of weight
        for r, fs in users.items():
            load = sum(w[f] * share for f, share in fs.items() if f in active)
            if load:
                step = min(step, left[r] / load)
        for f in active:
            step = min(step, (caps.get(f, math.inf) - rate[f]) / w[f])
        if math.isinf(step):
            for f in active:
                rate[f] = math.inf
            break
        for f in active:
            rate[f] += step * w[f]
        for r, fs in users.items():
            left[r] -= step * sum(w[f] * share for f, share in fs.items() if f in active)
        frozen = {f for f in active if caps.get(f, math.inf) - rate[f] <= 1e-9 * max(rate[f], 1.0)}
        for r, fs in users.items():
            if left[r] <= 1e-9 * max(capacity[r], 1.0):
                frozen |= {f for f in fs if f in active}
        active -= frozen
    return rate
