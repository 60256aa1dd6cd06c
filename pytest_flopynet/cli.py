"""The `flopynet` command: validate, run, list, schema, compare, report. Errors are one line and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from .errors import FlopynetError, UnavailableError
from .settings import RunSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def cmd_validate(args) -> int:
    from .checks import check_buildable
    from .discovery import CLASS_FILE, load_source
    from .model import check
    status = EXIT_OK
    for path in args.files:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scenarios = load_source(Path(path))
                for scenario in scenarios:  # what a run checks where it is built: registries, topology
                    if Path(path).name == CLASS_FILE:  # a class's config is a Python object: its data too
                        check(scenario.config, str(path))
                    check_buildable(scenario.config, str(path), base_dir=Path(path).parent)
            for w in caught:
                _one_line_warning(w.message, w.category, w.filename, w.lineno)
            for scenario in scenarios:
                print(f"{path}: ok ({scenario.config.name}, {len(scenario.config.events)} events)")
        except FlopynetError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_USAGE
    return status


def cmd_schema(args) -> int:
    from .model import scenario_schema
    print(json.dumps(scenario_schema(), indent=2))
    return EXIT_OK


def _needs(config) -> str:
    """What a scenario needs beyond the plugin: cores, memory, a local data set."""
    from .fl.datasets import LOCAL_DATASETS
    req, needs = config.requirements, []
    if req.min_cpu_cores > 1:
        needs.append(f"{req.min_cpu_cores} cores")
    if req.min_memory_gb > 1:
        needs.append(f"{req.min_memory_gb:g} GiB")
    if config.fl_config.dataset in LOCAL_DATASETS:
        needs.append(f"{config.fl_config.dataset} in --data-dir")
    return ", ".join(needs) or "-"


def cmd_list(args) -> int:
    from .discovery import discover, family
    catalogue = discover([Path(args.path)])
    rows = [("name", "family", "size", "backend", "needs", "source")]
    for name, scenario in sorted(catalogue.scenarios.items()):
        c = scenario.config
        size = next((t.removesuffix("_size") for t in c.tags if t in ("ci_size", "full_size")), "-")
        source = str(scenario.source) if scenario.source else "entry point"
        rows.append((name, family(c), size, c.backend or "sim", _needs(c), source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(r, widths)) + "  " + r[-1])
    for where, reason in catalogue.errors:
        print(f"{where}: cannot load: {reason.splitlines()[0]}", file=sys.stderr)
    return EXIT_FAILED if catalogue.errors else EXIT_OK


class Progress:
    """A progress bar of rounds and scenario time on stderr: redrawn in place on a terminal, one line
    per round in a log."""

    def __init__(self, config, stream=sys.stderr):
        self.total, self.end = config.fl_config.total_rounds, config.duration_minutes * 60
        self.stream, self.tty = stream, stream.isatty()

    def __call__(self, round, metrics, execution) -> None:
        done = round / self.total
        bar = "#" * int(done * 24)
        line = (f"[{bar:<24}] round {round}/{self.total}  scenario {metrics.end_time:7.1f} s / {self.end:g} s  "
                f"accuracy {metrics.accuracy:.4f}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def cmd_run(args) -> int:
    from .analysis.compare import format_table, headline
    from .analysis.gates import evaluate, failure_message, merge_gates
    from .discovery import find_scenario
    from .session import Scenario
    from .settings import RunSettings
    settings = RunSettings.from_cli(args)
    if settings.threads:
        import torch
        torch.set_num_threads(settings.threads)
    found = find_scenario(args.scenario, [Path.cwd()], args.size)
    config = found.config
    seed = settings.seed_for(config)
    reports = settings.reports / f"{config.name}-seed{seed}" if settings.reports else None
    runner = Scenario(config, settings=settings, source=found.source, reports_dir=reports)
    progress = None if args.quiet else Progress(config)
    runner.on_round_end = progress
    wall = time.perf_counter()
    try:
        result = found.execute_on(runner)
    except UnavailableError as exc:
        try:
            ci = find_scenario(config.name, [Path.cwd()], "ci") if not config.name.endswith("_ci") else None
        except FlopynetError:
            ci = None
        raise UnavailableError(f"{exc}; its CI-size variant runs here: flopynet run {ci.config.name}"
                               if ci else str(exc)) from None
    finally:
        if progress:
            progress.close()
    wall = time.perf_counter() - wall
    s = result.summary
    print(f"{config.name}: {result.state} on {runner.backend}, seed {seed}: {s['fl_rounds_completed']} rounds, "
          f"final accuracy {s['final_accuracy']:.4f}, loss {s['final_loss']:.4f}, "
          f"{s['total_duration_seconds']:.1f} s of scenario time in {wall:.1f} s of wall time")
    print("\n".join(format_table({config.name: headline(result.analysis)})))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(result.to_json(), encoding="utf-8")
        print(f"results: {args.json}")
    if reports:
        print(f"reports: {reports}")
    if result.execution.error_message:
        print(f"error: {result.execution.error_message}", file=sys.stderr)
        return EXIT_FAILED
    outcomes = evaluate(merge_gates(config.gates, settings.gates), result.analysis)
    if outcomes:
        ok = all(o.passed for o in outcomes)
        print("\n".join(str(o) for o in outcomes) if ok else failure_message(outcomes))
        return EXIT_OK if ok else EXIT_FAILED
    return EXIT_OK


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
    from .analysis.compare import compare_scenarios, format_table
    from .report.plots import plot_comparison
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
    from .analysis.compare import format_table, headline
    from .report.plots import plot_run
    if args.allure:
        from .report.allure import generate_html
        index = generate_html(Path(args.allure), Path(args.output))
        print(f"HTML report: {index} (serve the folder over HTTP to view it, e.g. npx allure open {args.output})")
        if not args.folders:
            return EXIT_OK
    if not args.folders:
        raise FlopynetError("flopynet report: give report folders, or --allure RESULTS")
    rows = {}
    for folder in map(Path, args.folders):
        path, results = _read_results(str(folder))
        metrics_path = path.with_name("metrics.json")
        samples = json.loads(metrics_path.read_text(encoding="utf-8"))["samples"] if metrics_path.is_file() else {}
        written = plot_run(results, samples, path.parent)
        rows[str(path.parent)] = headline(results)
        print(f"{path.parent}: " + ", ".join(written))
    print("\n".join(format_table(rows, label="report")))
    return EXIT_OK


def cmd_cleanup(args) -> int:
    from .network.lab import cleanup, leftovers
    if args.check:
        found = leftovers()
        print("\n".join(f"left over: {thing}" for thing in found) if found else "nothing left over")
        return EXIT_FAILED if found else EXIT_OK
    removed = cleanup()
    print("\n".join(f"removed {thing}" for thing in removed) if removed else "nothing left over")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flopynet", description="Federated-learning robustness scenarios.")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check scenario files")
    v.add_argument("files", nargs="+")
    v.set_defaults(fn=cmd_validate)
    s = sub.add_parser("schema", help="print the JSON Schema of scenario files")
    s.set_defaults(fn=cmd_schema)
    ls = sub.add_parser("list", help="the scenarios under a folder (its scenarios/) and of installed packages")
    ls.add_argument("path", nargs="?", default=".")
    ls.set_defaults(fn=cmd_list)
    r = sub.add_parser("run", help="run a scenario file or a built-in scenario by name")
    r.add_argument("scenario")
    r.add_argument("--size", choices=["full", "ci"], help="ci: a built-in name means its CI-size variant "
                                                         "(default: $FLOPYNET_SCENARIO_SIZE, else full)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.add_argument("--json", help="write the results structure to this file")
    RunSettings.add_cli_arguments(r)  # --seed, --backend, --executor ...: the pytest options' twins (settings.py)
    r.set_defaults(fn=cmd_run)
    c = sub.add_parser("compare", help="compare runs: a table, the best of each kind, an overlay plot")
    c.add_argument("results", nargs="+", help="analysis.json files or report folders")
    c.add_argument("--plot", default="compare.png", help="overlay plot to write ('' for none)")
    c.add_argument("--json", help="write the comparison to this file")
    c.set_defaults(fn=cmd_compare)
    rp = sub.add_parser("report", help="(re)draw the plots of report folders and print their figures; "
                                       "--allure: an HTML report of pytest's --alluredir results (Allure 3)")
    rp.add_argument("folders", nargs="*")
    rp.add_argument("--allure", metavar="RESULTS", help="the --alluredir folder to turn into HTML")
    rp.add_argument("-o", "--output", default="allure-report", help="where the HTML report goes")
    rp.set_defaults(fn=cmd_report)
    cl = sub.add_parser("cleanup", help="remove namespaces, links and Open vSwitch daemons that crashed "
                                        "netns runs left behind (like mn -c)")
    cl.add_argument("--check", action="store_true", help="remove nothing; list what any lab left (namespaces, links, "
                                                       "nftables tables, processes) and exit 1 if anything")
    cl.set_defaults(fn=cmd_cleanup)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from .model import ScenarioWarning
    where = f"{filename}: " if issubclass(category, ScenarioWarning) else ""  # the scenario file
    print(f"warning: {where}{message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        return args.fn(args)
    except UnavailableError as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except FlopynetError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head, which closed early: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
