"""flopynet run: one scenario from the command line, with a progress bar and its gates."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..analysis.compare import format_table, headline
from ..analysis.gates import evaluate, failure_message
from ..discovery import find_scenario
from ..errors import FlopynetError, UnavailableError
from ..report.exports import folder_name
from ..session import Scenario
from ..settings import RunSettings
from . import EXIT_FAILED, EXIT_OK


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
    settings = RunSettings.from_cli(args)
    if settings.threads:
        import torch
        torch.set_num_threads(settings.threads)
    found = find_scenario(args.scenario, [Path.cwd()], args.size)
    config = found.config
    seed = settings.seed_for(config)
    reports = settings.reports / folder_name(f"{config.name}-seed{seed}") if settings.reports else None
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
    if args.json:  # before anything is printed: a closed standard output (| head) cannot lose it
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(result.to_json(), encoding="utf-8")
    s = result.summary
    print(f"{config.name}: {result.state} on {runner.backend}, seed {seed}: {s['fl_rounds_completed']} rounds, "
          f"final accuracy {s['final_accuracy']:.4f}, loss {s['final_loss']:.4f}, "
          f"{s['total_duration_seconds']:.1f} s of scenario time in {wall:.1f} s of wall time")
    print("\n".join(format_table({config.name: headline(result.analysis)})))
    if args.json:
        print(f"results: {args.json}")
    if reports:
        print(f"reports: {reports}")
    if result.execution.error_message:
        print(f"error: {result.execution.error_message}", file=sys.stderr)
        return EXIT_FAILED
    outcomes = evaluate(settings.gates_for(config), result.analysis)
    if outcomes:
        ok = all(o.passed for o in outcomes)
        print("\n".join(str(o) for o in outcomes) if ok else failure_message(outcomes))
        return EXIT_OK if ok else EXIT_FAILED
    return EXIT_OK
