"""CI gates: `metric op number`, parsed by a tiny grammar (never eval'd) and checked against results."""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Iterable

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


@dataclass(frozen=True)
class GateOutcome:
    gate: Gate
    actual: float | None
    passed: bool

    def __str__(self) -> str:
        actual = "not available" if self.actual is None else f"{self.actual:.6g}"
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.gate}  (actual: {actual})"


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


def lookup(results: dict[str, Any], metric: str) -> Any:
    """Dotted path from the results root, else under execution_summary or custom_analysis."""
    for root in (results, results.get("execution_summary", {}), results.get("custom_analysis", {})):
        node: Any = root
        for part in metric.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
    return None


def evaluate(gates: Iterable[Gate], results: dict[str, Any]) -> list[GateOutcome]:
    outcomes = []
    for gate in gates:
        value = lookup(results, gate.metric)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        actual = float(value) if ok else None
        outcomes.append(GateOutcome(gate, actual, ok and _OPS[gate.op](actual, gate.threshold)))
    return outcomes


def failure_message(outcomes: list[GateOutcome]) -> str:
    failed = sum(not o.passed for o in outcomes)
    lines = [f"{failed} of {len(outcomes)} gates failed:"] + [f"  {o}" for o in outcomes]
    return "\n".join(lines)
