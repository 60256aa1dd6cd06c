"""flopynet compare and report: tables and plots of finished runs' results."""
from __future__ import annotations

import json
from pathlib import Path

from ..analysis.compare import compare_scenarios, format_table, headline
from ..errors import FlopynetError
from ..model import load_scenario, merge_gates
from ..report.allure import generate_html
from ..report.plots import plot_comparison, plot_run
from . import EXIT_OK


def _read_results(path_text: str) -> tuple[Path, dict]:
    """A results file, or a report folder holding analysis.json."""
    path = Path(path_text)
    if path.is_dir():
        path = path / "analysis.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FlopynetError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise FlopynetError(f"{path}: not JSON: {exc}") from None
    missing = [k for k in ("scenario_name", "execution_summary", "rounds", "events") if k not in results]
    if missing:
        raise FlopynetError(f"{path}: not a flopynet results file (no {', '.join(missing)})")
    return path, results


def cmd_compare(args) -> int:
    loaded = [_read_results(p) for p in args.results]
    labels = [f"{r['scenario_name']}-seed{r.get('seed')}" for _, r in loaded]
    if len(set(labels)) < len(labels):  # the same scenario and seed twice: tell them apart by file
        labels = [str(path) for path, _ in loaded]
    comparison = compare_scenarios(dict(zip(labels, (r for _, r in loaded))))
    print("\n".join(format_table(comparison["scenarios"])))
    for key, figure in (("best_accuracy", "final_accuracy"), ("most_robust", "max_accuracy_drop"),
                        ("fastest_to_accuracy", "time_to_target_s")):
        best = comparison[key]
        print(f"{key}: " + (f"{best['scenario']} ({figure} {best[figure]:.4g})" if best else "none"))
    if args.plot:
        print(f"plot: {plot_comparison(dict(zip(labels, (r for _, r in loaded))), Path(args.plot))}")
    if args.json:
        Path(args.json).write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
        print(f"comparison: {args.json}")
    return EXIT_OK


def cmd_report(args) -> int:
    if args.allure:
        index = generate_html(Path(args.allure), Path(args.output))
        print(f"HTML report: {index} (one file: open it in a browser)")
        if not args.folders:
            return EXIT_OK
    if not args.folders:
        raise FlopynetError("flopynet report: give report folders, or --allure RESULTS")
    rows = {}
    for folder in map(Path, args.folders):
        path, results = _read_results(str(folder))
        metrics_path = path.with_name("metrics.json")
        samples = json.loads(metrics_path.read_text(encoding="utf-8"))["samples"] if metrics_path.is_file() else {}
        scenario = path.with_name("scenario.yaml")
        own = load_scenario(scenario).gates if scenario.is_file() else []
        written = plot_run(results, samples, path.parent, x_axis=args.plot_axis, gates=merge_gates(own, args.gate))
        rows[str(path.parent)] = headline(results)
        print(f"{path.parent}: " + ", ".join(written))
    print("\n".join(format_table(rows, label="report")))
    return EXIT_OK
