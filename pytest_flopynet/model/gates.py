"""The gate grammar: `metric op number`, parsed by a tiny regular expression (never eval'd). Part of
the file format (a scenario's `gates`); analysis.gates checks gates against results."""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Iterable

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
# Statistics a gate may take over the runs of several seeds: `mean(final_accuracy) >= 0.9`.
STATS = ("mean", "median", "min", "max", "std", "ci95_low", "ci95_high")
_PATH = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_GATE = re.compile(rf"^\s*(?:({'|'.join(STATS)})\(\s*({_PATH})\s*\)|({_PATH}))\s*(>=|<=|==|!=|>|<)\s*"
                   r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class GateSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Gate:
    """`metric op threshold`; with `stat`, the statistic of the metric over a run's seeds (a plain gate
    holds for every seed)."""

    metric: str
    op: str
    threshold: float
    stat: str | None = None

    @property
    def subject(self) -> str:
        return f"{self.stat}({self.metric})" if self.stat else self.metric

    def __str__(self) -> str:
        return f"{self.subject} {self.op} {self.threshold:g}"


def parse_gate(text: str) -> Gate:
    m = _GATE.match(str(text))
    if not m:
        raise GateSyntaxError(f"cannot parse gate {text!r}: expected 'metric op number' or 'stat(metric) op number' "
                              f"with op one of {' '.join(_OPS)} and stat one of {', '.join(STATS)}, e.g. "
                              f"'final_accuracy >= 0.85' or 'mean(final_accuracy) >= 0.85'")
    stat, inner, plain, op, number = m.groups()
    return Gate(inner or plain, op, float(number), stat)


def merge_gates(*sources: Iterable[str]) -> list[Gate]:
    """Later sources override earlier ones per metric and statistic (file < marker < ini < command line)."""
    merged: dict[str, Gate] = {}
    for source in sources:
        for text in source:
            gate = parse_gate(text)
            merged[gate.subject] = gate
    return list(merged.values())
