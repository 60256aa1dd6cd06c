"""The `flopynet` command: validate, run, schema, list. Errors are one line and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from .errors import FlopynetError, UnavailableError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _scenario_path(name_or_path: str) -> Path:
    from .discovery import resolve_scenario
    return resolve_scenario(name_or_path, [Path.cwd()])


def cmd_validate(args) -> int:
    from .model import load_scenario
    status = EXIT_OK
    for path in args.files:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                config = load_scenario(path)
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            print(f"{path}: ok ({config.name}, {len(config.events)} events)")
        except FlopynetError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_USAGE
    return status


def cmd_schema(args) -> int:
    from .model import scenario_schema
    print(json.dumps(scenario_schema(), indent=2))
    return EXIT_OK


def cmd_list(args) -> int:
    from .discovery import is_scenario_file
    from .model import load_scenario
    root = Path(args.path)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_scenario_file(p)):
        try:
            c = load_scenario(path)
            fl = c.fl_config
            print(f"{c.name:<32} {fl.model_architecture}/{fl.dataset}, {c.num_clients} clients, "
                  f"{fl.total_rounds} rounds, {len(c.events)} events, {c.duration_minutes:g} min  {path}")
        except FlopynetError as exc:
            print(f"{path}: cannot load: {str(exc).splitlines()[0]}", file=sys.stderr)
    return EXIT_OK


def cmd_run(args) -> int:
    from .analysis.gates import evaluate, failure_message, merge_gates
    from .engine.runner import Scenario
    from .model import load_scenario
    path = _scenario_path(args.scenario)
    config = load_scenario(path)
    seed = args.seed if args.seed is not None else (config.seed if config.seed is not None else 0)
    if args.seed is not None:
        config.seed = None  # the command line's seed wins over the file's
    reports = Path(args.reports) / f"{config.name}-seed{seed}" if args.reports else None
    runner = Scenario(config, seed=seed, backend=args.backend, source=path, reports_dir=reports)
    wall = time.perf_counter()
    result = runner.run()
    wall = time.perf_counter() - wall
    s = result.summary
    print(f"{config.name}: {result.state} on {runner.backend}, seed {seed}: {s['fl_rounds_completed']} rounds, "
          f"final accuracy {s['final_accuracy']:.4f}, loss {s['final_loss']:.4f}, "
          f"{s['total_duration_seconds']:.1f} s of scenario time in {wall:.1f} s of wall time")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(result.to_json(), encoding="utf-8")
        print(f"results: {args.json}")
    if reports:
        print(f"reports: {reports}")
    if result.execution.error_message:
        print(f"error: {result.execution.error_message}", file=sys.stderr)
        return EXIT_FAILED
    outcomes = evaluate(merge_gates(config.gates, args.gate), result.analysis)
    if outcomes:
        ok = all(o.passed for o in outcomes)
        print("\n".join(str(o) for o in outcomes) if ok else failure_message(outcomes))
        return EXIT_OK if ok else EXIT_FAILED
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
    ls = sub.add_parser("list", help="list the scenario files under a folder")
    ls.add_argument("path", nargs="?", default=".")
    ls.set_defaults(fn=cmd_list)
    r = sub.add_parser("run", help="run a scenario file or a built-in scenario by name")
    r.add_argument("scenario")
    r.add_argument("--seed", type=int)
    r.add_argument("--backend", choices=["sim", "netns", "gns3"])
    r.add_argument("--json", help="write the results structure to this file")
    r.add_argument("--reports", default="reports", help="folder for results, metrics and the resolved scenario "
                                                        "('' to write none)")
    r.add_argument("--gate", action="append", default=[], help="extra gate 'metric op number' (repeatable)")
    r.set_defaults(fn=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
    except Exception as exc:
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
