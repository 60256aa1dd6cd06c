"""The gate grammar: `metric op number`, parsed by a tiny regular expression (never eval'd). Part of
the file format (a scenario's `gates`); analysis.gates checks gates against results."""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Iterable

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*(>=|<=|==|!=|>|<)\s*"
                   r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class GateSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_gate(text: str) -> Gate:
    m = _GATE.match(str(text))
    if not m:
        raise GateSyntaxError(f"cannot parse gate {text!r}: expected 'metric op number' with op one of "
                              f"{' '.join(_OPS)}, e.g. 'final_accuracy >= 0.85'")
    return Gate(m.group(1), m.group(2), float(m.group(3)))


def merge_gates(*sources: Iterable[str]) -> list[Gate]:
    """Later sources override earlier ones per metric (file < marker < ini < command line)."""
    merged: dict[str, Gate] = {}
    for source in sources:
        for text in source:
            gate = parse_gate(text)
            merged[gate.metric] = gate
    return list(merged.values())
