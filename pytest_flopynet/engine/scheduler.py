"""A heap of timed callbacks in scenario seconds; equal times fire by priority (lower first), then
in the order they were added."""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable


@dataclass(order=True)
class Entry:
    time: float
    priority: int
    seq: int
    callback: Callable[[], None] = field(compare=False)
    label: str = field(default="", compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._seq = itertools.count()

    def at(self, time: float, callback: Callable[[], None], label: str = "", priority: int = 0) -> Entry:
        """priority > 0 runs after everything else due at the same time (the monitor uses it, so a
        sample shows the state after the events of its instant)."""
        if time < 0 or math.isnan(time):
            raise ValueError(f"cannot schedule {label or callback!r} at {time}")
        entry = Entry(float(time), priority, next(self._seq), callback, label)
        heapq.heappush(self._heap, entry)
        return entry

    def next_time(self) -> float:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].time if self._heap else math.inf

    def pop(self) -> Entry:
        self.next_time()
        return heapq.heappop(self._heap)

    def __len__(self) -> int:
        return sum(not e.cancelled for e in self._heap)
