"""Ceilings on what a scenario may ask for: guards against a typo (a zero too many) that would eat
the machine's memory or never finish, checked when a file loads. Raise one on purpose with the
environment variable FLOPYNET_LIMITS, e.g. `FLOPYNET_LIMITS="clients=100000,rounds=1000000"`."""
from __future__ import annotations

import os

from ..errors import FlopynetError

ENV = "FLOPYNET_LIMITS"
LIMITS = {  # name -> (ceiling, what it counts)
    "clients": (200_000, "clients"),  # a population of 100,000 runs in under a second a round
    "hosts": (200_000, "hosts (network_config.node_count)"),
    "switches": (1_000, "switches"),
    "rounds": (100_000, "rounds"),
    "duration_minutes": (10_080, "minutes of scenario time (one week)"),
    "events": (10_000, "events"),
}


def limits() -> dict[str, float]:
    """The ceilings in force: LIMITS, with FLOPYNET_LIMITS's overrides."""
    out = {name: float(ceiling) for name, (ceiling, _) in LIMITS.items()}
    text = os.environ.get(ENV, "").strip()
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in LIMITS:
            raise FlopynetError(f"{ENV}: unknown limit {name!r} (known: {', '.join(LIMITS)})")
        try:
            out[name] = float(value)
        except ValueError:
            raise FlopynetError(f"{ENV}: {name}={value!r} is not a number") from None
    return out


def over_limit(name: str, value: float) -> str | None:
    """Why `value` is past the ceiling called `name`, or None."""
    ceiling = limits()[name]
    if value <= ceiling:
        return None
    shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return (f"{shown} {LIMITS[name][1]} is past the limit of {ceiling:,.0f}, a guard against typos that would exhaust "
            f"the machine; to mean it, raise it: {ENV}={name}=N")
