"""CI gates checked against results (the grammar is model.gates: part of the scenario file)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..model.gates import _OPS, Gate, GateSyntaxError, merge_gates, parse_gate  # noqa: F401 (re-exported)
from .spread import is_number, statistic


@dataclass(frozen=True)
class GateOutcome:
    gate: Gate
    actual: float | None
    passed: bool

    def __str__(self) -> str:
        actual = "not available" if self.actual is None else f"{self.actual:.6g}"
        if self.actual is None and self.gate.stat in ("ci95_low", "ci95_high"):
            actual += ": a confidence interval needs 2 or more seeds"
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.gate}  (actual: {actual})"


_MISSING = object()


def lookup(results: dict[str, Any], metric: str) -> Any:
    """Dotted path from the results root, else under execution_summary or custom_analysis."""
    for root in (results, results.get("execution_summary", {}), results.get("custom_analysis", {})):
        node = _walk(root, metric.split("."))
        if node is not _MISSING:
            return node
    return None


def _walk(node: Any, parts: list[str]) -> Any:
    """The value at a dotted path; a key may hold dots itself (a link group's metric, as in
    metrics_analysis.network_latency_ms.client_links.max), the longest key first."""
    if not parts:
        return node
    if isinstance(node, dict):
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in node:
                found = _walk(node[key], parts[n:])
                if found is not _MISSING:
                    return found
    return _MISSING


def numbers(results: dict[str, Any], metric: str) -> float | None:
    """A run's value of a dotted metric, if it is a number."""
    value = lookup(results, metric)
    return float(value) if is_number(value) else None


def evaluate(gates: Iterable[Gate], results: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> list[GateOutcome]:
    """Each gate against the results; with `runs` (the analyses of several seeds, results among them) a
    plain gate must hold for every seed (its actual value is the worst) and a statistic's gate is
    judged on that statistic over the seeds."""
    runs = runs or [results]
    outcomes = []
    for gate in gates:
        values = [numbers(r, gate.metric) for r in runs]
        if any(v is None for v in values):
            outcomes.append(GateOutcome(gate, None, False))
            continue
        if gate.stat:
            actual = statistic(gate.stat, values)
            passed = actual is not None and _OPS[gate.op](actual, gate.threshold)
        else:
            failing = [v for v in values if not _OPS[gate.op](v, gate.threshold)]
            worst = min if gate.op in (">=", ">") else max if gate.op in ("<=", "<") else (lambda xs: xs[0])
            actual, passed = worst(failing or values), not failing
        outcomes.append(GateOutcome(gate, actual, passed))
    return outcomes


def failure_message(outcomes: list[GateOutcome]) -> str:
    failed = sum(not o.passed for o in outcomes)
    lines = [f"{failed} of {len(outcomes)} gates failed:"] + [f"  {o}" for o in outcomes]
    return "\n".join(lines)
