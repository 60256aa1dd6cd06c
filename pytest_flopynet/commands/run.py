"""flopynet run: one scenario from the command line, with a progress bar and its gates."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ..analysis.compare import format_table, headline
from ..analysis.gates import evaluate, failure_message
from ..discovery import find_scenario
from ..errors import FlopynetError, UnavailableError
from ..report.exports import folder_name
from ..session import Scenario, log
from ..settings import RunSettings
from . import EXIT_FAILED, EXIT_OK


class Progress:
    """What `flopynet run` shows while it runs, on stderr: on a terminal a rich progress bar (rounds,
    scenario time, accuracy) with event lines above it; in a log the package's INFO lines (session.log),
    one per round and event edge; nothing under -q."""

    def __init__(self, config, quiet: bool = False, stream=sys.stderr):
        self.total, self.end = config.fl_config.total_rounds, config.duration_minutes * 60
        self.bar = self.handler = None
        if quiet:
            return
        if stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            self.bar = Bar(TextColumn("round"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
                           TimeElapsedColumn(), console=Console(file=stream))
            self.task = self.bar.add_task("rounds", total=self.total, status="")
            self.bar.start()
            handler = _AboveTheBar(self.bar.console)
        else:
            handler = logging.StreamHandler(stream)
        self.handler = handler
        handler.setLevel(logging.INFO)
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    def __call__(self, round, metrics, execution) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=round, status=f"scenario {metrics.end_time:.1f} s / {self.end:g} s  "
                                                               f"accuracy {metrics.accuracy:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.handler is not None:
            log.removeHandler(self.handler)


class _AboveTheBar(logging.Handler):
    """Event lines printed above the progress bar (rounds are the bar itself)."""

    def __init__(self, console):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "kind", None) != "round":
            self.console.print(record.getMessage(), highlight=False)


def cmd_run(args) -> int:
    settings = RunSettings.from_cli(args)
    import torch
    torch.set_num_threads(1)  # --threads N trains N clients at once instead (testrun.set_threads says why)
    found = find_scenario(args.scenario, [Path.cwd()], args.size)
    config = found.config
    seed = settings.seed_for(config)
    reports = settings.reports / folder_name(f"{config.name}-seed{seed}") if settings.reports else None
    runner = Scenario(config, settings=settings, source=found.source, reports_dir=reports)
    progress = Progress(config, args.quiet)
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
