"""What pytest's terminal shows of scenarios: a live line per round and per event edge while one runs,
and a summary table at the end that fits the terminal and shows each scenario's own gates."""
from __future__ import annotations

import io
import logging
from contextlib import nullcontext

import pytest

from .session import log, never_fired_text
from .testrun import reports_root

class LiveProgress(logging.Handler):
    """Writes the package's INFO lines (session.log) to the terminal as they happen. Off under -q, on
    xdist workers (their terminal is not the user's), when --log-cli-level shows them already, and with
    -p no:flopynet-live."""

    def __init__(self, config: pytest.Config):
        super().__init__(logging.INFO)
        self.config = config
        self.setFormatter(logging.Formatter("    %(message)s"))
        self.first_of_test = True

    @staticmethod
    def wanted(config: pytest.Config) -> bool:
        live_log = config.getoption("log_cli_level", None) or config.getini("log_cli")
        return config.get_verbosity() >= 0 and not hasattr(config, "workerinput") and not live_log

    def pytest_runtest_logstart(self, nodeid, location) -> None:
        self.first_of_test = True

    def emit(self, record: logging.LogRecord) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else nullcontext():
            if self.first_of_test:  # after the test's name or progress dots, on a line of its own
                reporter.ensure_newline()
                self.first_of_test = False
            reporter.write_line(self.format(record))


def install_live_progress(config: pytest.Config) -> None:
    """Our logger says INFO (so the lines exist for --log-cli-level and captured logs too); the
    live handler writes them unless pytest's own live logging or -q says otherwise."""
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if LiveProgress.wanted(config):
        handler = LiveProgress(config)
        if config.pluginmanager.register(handler, "flopynet-live") is None:  # -p no:flopynet-live
            return
        log.addHandler(handler)
        config.add_cleanup(lambda: log.removeHandler(handler))


class SummaryReporter:
    """Gathers each scenario's row from its report (so rows reach the xdist controller too) and
    writes them as one table at the end, as wide as the terminal."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.rows: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = getattr(report, "flopynet", None)
        if report.when == "call" and row is not None:
            self.rows.append({**row, "outcome": report.outcome, "nodeid": report.nodeid})

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.section("flopynet scenarios")
        rows = sorted(self.rows, key=lambda r: r["nodeid"])
        labels = [r["nodeid"].split("::", 1)[-1] for r in rows]
        if len(set(labels)) < len(labels):  # same test name in two files: show whole ids
            labels = [r["nodeid"] for r in rows]
        for line in summary_table(labels, rows, tr._tw.fullwidth):
            tr.write_line(line)
        for label, r in zip(labels, rows):
            if r.get("events_never_fired"):
                tr.write_line(f"{label}: {never_fired_text(r['events_never_fired'])}", yellow=True)
        tr.write_line(f"reports: {reports_root(self.config)}")


def final_accuracy(row: dict) -> str:
    """One run's final accuracy, or over several seeds their mean, standard deviation and count."""
    spread = row.get("final_accuracy_spread")
    if spread:
        return f"{spread['mean']:.4f} \u00b1 {spread['std']:.4f} (n={spread['n']})"
    return f"{row['final_accuracy']:.4f}"


def summary_table(labels: list[str], rows: list[dict], width: int) -> list[str]:
    """One row per test: its scenario's figures and its own gates (expression, actual value, verdict;
    one line each), drawn by rich within `width` columns. Where the terminal is too narrow, the least
    needed columns go first (scenario, recovery, traffic, drop, rounds, final accuracy: usually a gate);
    then test names wrap beyond 28 characters and the gates share the rest."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def short(subject: str) -> str:  # a dotted metric by its last name, inside a statistic too
        stat, _, metric = subject.rpartition("(")
        return f"{stat}({metric.rsplit('.', 1)[-1]}" if stat else subject.rsplit(".", 1)[-1]

    def gate_lines(r: dict) -> str:  # max_accuracy_drop <= 0.1  0.02  pass
        return "\n".join(f"{short(gate.split(' ', 1)[0])} {gate.split(' ', 1)[1]}  "
                         f"{'-' if actual is None else f'{actual:.4g}'}  {'pass' if passed else 'FAIL'}"
                         for gate, actual, passed in r.get("gate_results", [])) or "-"

    columns = [  # heading, cells, right-aligned, dropped when narrow (lower goes first; 0: never)
        ("test", labels, False, 0),
        ("scenario", [r["scenario"] for r in rows], False, 1),
        ("rounds", [str(r["rounds"]) for r in rows], True, 5),
        ("final acc", [final_accuracy(r) for r in rows], True, 6),
        ("MB", [f"{r['bytes_total'] / 1e6:.1f}" for r in rows], True, 3),
        ("max drop", [f"{r['max_accuracy_drop']:.3f}" for r in rows], True, 4),
        ("recovery s", ["-" if r.get("recovery_time_s") is None else f"{r['recovery_time_s']:.0f}" for r in rows],
         True, 2),
        ("gates: target  actual  verdict", [gate_lines(r) for r in rows], False, 0),
        ("outcome", [r["outcome"] for r in rows], False, 0),
    ]
    if all(r["scenario"] == label.split("[")[0] for r, label in zip(rows, labels)):
        columns.pop(1)  # scenario files: the test is named after its scenario

    def natural(column) -> int:
        head, cells, _, _ = column
        return max(len(line) for text in (head, *cells) for line in text.splitlines()) + 2

    def needed(column) -> int:  # a test name may wrap beyond 28 characters
        return min(natural(column), 30) if column is columns[0] else natural(column)

    while sum(map(needed, columns)) > width - 4 and any(c[3] for c in columns):
        columns.remove(min((c for c in columns if c[3]), key=lambda c: c[3]))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    test, gates = columns[0], next(c for c in columns if c[0].startswith("gates"))
    others = sum(natural(c) for c in columns if c is not test and c is not gates)
    test_width = min(natural(test) - 2, max(12, min(28, width - 4 - others - 24)))  # leaving the gates 20 or more
    gates_width = max(16, min(natural(gates) - 2, width - 4 - others - (test_width + 2) - 2))
    for column in columns:
        head, _, right, _ = column
        table.add_column(head, justify="right" if right else "left", overflow="fold",
                         min_width={id(test): test_width, id(gates): gates_width}.get(id(column)),
                         max_width=max(test_width, width - 4 - others - gates_width - 4) if column is test else None)
    for i in range(len(rows)):
        table.add_row(*(Text(cells[i]) for _, cells, _, _ in columns))  # Text: "[client_4]" is not markup
    console = Console(width=max(width, 40), file=io.StringIO(), color_system=None, highlight=False)
    console.print(table)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]
