"""Clocks: scenario time that fires the scheduler's callbacks at their exact times.

VirtualClock jumps (a 45-minute scenario runs in seconds); WallClock sleeps, with time_scale
compressing scenario time for emulated backends (time_scale 30: 30 scenario seconds per second).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Iterator, Protocol

from .scheduler import Scheduler


class Clock(Protocol):
    scheduler: Scheduler

    def now(self) -> float: ...

    def advance_to(self, t: float) -> None:
        """Move scenario time to t, firing every scheduled callback due on the way, in order."""

    def start(self) -> None:
        """Scenario time 0 is now (a wall clock starts after the network is built)."""

    def hold(self):
        """A context in which scenario time stands still: in-process work whose duration the scenario
        models (local training, from the device profile) takes no scenario time on a wall clock."""


class VirtualClock:
    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self.scheduler = scheduler or Scheduler()
        self._now = 0.0

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        if t < self._now:
            raise ValueError(f"time runs forward: asked for {t} at {self._now}")
        while self.scheduler.next_time() <= t:
            entry = self.scheduler.pop()
            self._now = entry.time
            entry.callback()
        if not math.isinf(t):
            self._now = t

    def start(self) -> None:
        pass

    @contextmanager
    def hold(self) -> Iterator[None]:
        yield


class WallClock:
    def __init__(self, scheduler: Scheduler | None = None, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.scheduler = scheduler or Scheduler()
        self.time_scale = time_scale
        self._t0 = time.monotonic()
        self._held: float | None = None

    def start(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        if self._held is not None:
            return self._held
        return self.at(time.monotonic())

    def at(self, monotonic: float) -> float:
        """The scenario time of a time.monotonic() reading taken outside a hold."""
        return (monotonic - self._t0) * self.time_scale

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self._held is not None:
            yield
            return
        self._held, began = self.now(), time.monotonic()
        try:
            yield
        finally:
            self._t0 += time.monotonic() - began
            self._held = None

    def _sleep_until(self, t: float) -> None:
        delay = (t - self.now()) / self.time_scale
        if delay > 0:
            time.sleep(delay)

    def advance_to(self, t: float) -> None:
        while self.scheduler.next_time() <= t:
            entry = self.scheduler.pop()
            self._sleep_until(entry.time)
            entry.callback()
        if not math.isinf(t):
            self._sleep_until(t)


def clock_for(backend: str, time_scale: float | None = None) -> Clock:
    """Scenario time for a backend: virtual for the simulation, wall time (compressed by time_scale)
    where real packets move."""
    return VirtualClock() if backend == "sim" else WallClock(time_scale=float(time_scale or 1.0))
