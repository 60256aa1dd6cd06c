"""Side-by-side figures of several runs: the terminal summary's row, compare_scenarios and its table.

Everything is computed from a results structure (analysis.json), so runs compare whether they were
made in this process, by another xdist worker, or read back from disk."""
from __future__ import annotations

from typing import Any

from .custom import TARGET_ACCURACY, convergence_analysis, efficiency_analysis, robustness_metrics


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures a reader looks at first. Robustness and convergence are recomputed from the raw
    rounds and events, so they exist even when the scenario did not name those analyses."""
    record = {"rounds": results["rounds"], "events": results["events"], "samples": {}}
    summary = results["execution_summary"]
    conv = convergence_analysis(record) if record["rounds"] else {}
    rob = robustness_metrics(record)
    eff = efficiency_analysis(record)
    return {
        "scenario": results["scenario_name"], "seed": results.get("seed"), "state": results.get("state", ""),
        "rounds": summary["fl_rounds_completed"], "final_accuracy": summary["final_accuracy"],
        "max_accuracy": conv.get("max_accuracy", 0.0), "target_accuracy": TARGET_ACCURACY,
        "rounds_to_target": conv.get("rounds_to_target"), "time_to_target_s": conv.get("time_to_target_seconds"),
        "bytes_total": eff["communication_cost"]["bytes_total"], "max_accuracy_drop": rob["max_accuracy_drop"],
        "recovery_time_s": rob["recovery_time_seconds"], "duration_s": summary["total_duration_seconds"],
    }


def _best(rows: dict[str, dict], key: str, *, lowest: bool) -> dict[str, Any] | None:
    """The run with the best value of key (missing values never win; ties go to higher final accuracy)."""
    have = [(label, r) for label, r in rows.items() if r[key] is not None]
    if not have:
        return None
    sign = 1 if lowest else -1
    label, row = min(have, key=lambda lr: (sign * lr[1][key], -lr[1]["final_accuracy"]))
    return {"scenario": label, key: row[key]}


def compare_scenarios(results: dict[str, Any]) -> dict[str, Any]:
    """The original documentation's comparison: best_accuracy, most_robust (smallest accuracy drop
    during any event window), fastest (time to the target accuracy), and a row per run.
    results maps a label to a results structure or a ScenarioResult."""
    rows = {label: headline(getattr(r, "analysis", r)) for label, r in results.items()}
    return {
        "best_accuracy": _best(rows, "final_accuracy", lowest=False),
        "most_robust": _best(rows, "max_accuracy_drop", lowest=True),
        "fastest_to_accuracy": _best(rows, "time_to_target_s", lowest=True),
        "scenarios": rows,
    }


COLUMNS = (  # heading, key, format
    ("rounds", "rounds", "{:d}"), ("final acc", "final_accuracy", "{:.4f}"),
    (f"to {TARGET_ACCURACY:g} (rounds)", "rounds_to_target", "{:d}"),
    (f"to {TARGET_ACCURACY:g} (s)", "time_to_target_s", "{:.0f}"),
    ("comm MB", "bytes_total", "{:.1f}"), ("max drop", "max_accuracy_drop", "{:.3f}"),
    ("recovery s", "recovery_time_s", "{:.0f}"), ("scen. time s", "duration_s", "{:.0f}"),
)


def cell(key: str, fmt: str, value) -> str:
    if value is None:
        return "-"
    return fmt.format(value / 1e6 if key == "bytes_total" else value)


def format_table(rows: dict[str, dict[str, Any]], extra: dict[str, dict[str, str]] | None = None,
                 label: str = "scenario") -> list[str]:
    """Text table, one line per run: the label column, the headline columns, then any extra columns."""
    extra = extra or {}
    extra_heads = list(next(iter(extra.values()), {}))
    heads = [label, *(h for h, _, _ in COLUMNS), *extra_heads]
    body = [[name, *(cell(k, f, row[k]) for _, k, f in COLUMNS), *(extra.get(name, {}).get(h, "") for h in extra_heads)]
            for name, row in rows.items()]
    widths = [max(len(c) for c in column) for column in zip(heads, *body)]
    align = lambda cells: "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"  # noqa: E731
                                    for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [align(heads), *(align(cells) for cells in body)]
