"""Statistics over the runs of several seeds, what a robustness claim rests on: mean, spread and a 95%
confidence interval for the mean (Student's t), for statistical gates and the seeds report."""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable


def is_number(value: Any) -> bool:
    """A real number, not a bool and not NaN: what a gate or a statistic can use."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def describe(values: Iterable[float]) -> dict[str, Any]:
    """n, mean, std (sample, n - 1), median, min, max and ci95 [low, high] of the values; ci95 is None
    below two values (one run says nothing of its spread)."""
    xs = [float(v) for v in values]
    if not xs:
        return {"n": 0, "mean": None, "std": None, "median": None, "min": None, "max": None, "ci95": None}
    mean = statistics.fmean(xs)
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    ci95 = None
    if len(xs) > 1:
        from scipy.stats import t  # scikit-learn's dependency
        half = float(t.ppf(0.975, len(xs) - 1)) * std / math.sqrt(len(xs))
        ci95 = [mean - half, mean + half]
    return {"n": len(xs), "mean": mean, "std": std, "median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "ci95": ci95}


def statistic(stat: str, values: list[float]) -> float | None:
    """One of model.gates.STATS over the values; None where it is undefined (ci95 of one run)."""
    d = describe(values)
    if stat in ("ci95_low", "ci95_high"):
        return None if d["ci95"] is None else d["ci95"][stat == "ci95_high"]
    return d[stat]


def across_seeds(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """describe() of every numeric execution-summary metric over the runs (one analysis per seed)."""
    keys = [k for k, v in runs[0]["execution_summary"].items() if is_number(v)]
    return {key: describe(r["execution_summary"][key] for r in runs if is_number(r["execution_summary"].get(key)))
            for key in keys}
