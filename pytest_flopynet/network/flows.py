"""Flow-level TCP arithmetic: max-min fair sharing and the Mathis bound under loss."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Hashable

MSS_BYTES = 1448
# TCP goodput per byte of link capacity with a 1500-byte MTU: 1448 payload bytes per 1514 on the wire.
GOODPUT = 1448 / 1514


def mathis_rate(rtt_s: float, loss: float, mss: int = MSS_BYTES) -> float:
    """Upper bound of a TCP flow's rate in bytes/s: MSS / RTT * 1.22 / sqrt(p) (Mathis et al. 1997)."""
    if loss <= 0 or rtt_s <= 0:
        return math.inf
    return mss / rtt_s * 1.22 / math.sqrt(loss)


def max_min_rates(paths: dict[Hashable, list[Hashable]], capacity: dict[Hashable, float],
                  caps: dict[Hashable, float] | None = None) -> dict[Hashable, float]:
    """Max-min fair rates by progressive filling: raise every unfrozen flow's rate together until a
    resource saturates or a flow reaches its own cap; freeze those flows; repeat."""
    caps = caps or {}
    rate = {f: 0.0 for f in paths}
    left = dict(capacity)
    users: dict[Hashable, set] = defaultdict(set)
    for f, path in paths.items():
        for r in path:
            users[r].add(f)
    active = {f for f, path in paths.items() if path or f in caps}
    for f in set(paths) - active:
        rate[f] = math.inf  # a flow that crosses nothing is not limited by the network
    while active:
        step = math.inf
        for r, fs in users.items():
            n = len(fs & active)
            if n:
                step = min(step, left[r] / n)
        for f in active:
            step = min(step, caps.get(f, math.inf) - rate[f])
        if math.isinf(step):
            for f in active:
                rate[f] = math.inf
            break
        for f in active:
            rate[f] += step
        for r, fs in users.items():
            left[r] -= step * len(fs & active)
        frozen = {f for f in active if caps.get(f, math.inf) - rate[f] <= 1e-9 * max(rate[f], 1.0)}
        for r, fs in users.items():
            if left[r] <= 1e-9 * max(capacity[r], 1.0):
                frozen |= fs & active
        active -= frozen
    return rate
