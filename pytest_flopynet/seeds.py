"""One seed drives everything: each purpose (a test, a round, a client) derives its own from it."""
from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for one purpose, e.g. derive_seed(seed, "train", round, client)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
