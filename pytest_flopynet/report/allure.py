"""Allure glue, active only with allure-pytest's --alluredir: each scenario test gets labels (epic =
family, feature = aggregation rule, story = event types, severity), parameters (seed, backend, key
configuration values), a step per event start and end and per round, and its report files attached
(plots, metrics, analysis.json, the resolved scenario, a falsifying schedule)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ..errors import FlopynetError, UnavailableError
from ..model import family

ATTACHMENTS = {  # report file suffix -> allure attachment type name
    ".png": "PNG", ".json": "JSON", ".csv": "CSV", ".yaml": "YAML",
}


def enabled(config: pytest.Config) -> bool:
    return bool(config.pluginmanager.hasplugin("allure_pytest") and config.getoption("allure_report_dir", None))


class AllureSteps:
    """Registered as a plugin when Allure is on: steps at scenario events and round ends."""

    @pytest.hookimpl
    def pytest_flopynet_event(self, event, phase, execution) -> None:
        import allure
        records = [r for r in execution.metrics.events if r.event_type == str(event.event_type)]
        times = [r.start_time for r in records] if phase == "start" else [r.end_time for r in records
                                                                           if r.end_time is not None]
        with allure.step(f"{max(times, default=0.0):.1f} s: {event.event_type} {phase} on {event.target}"):
            pass

    @pytest.hookimpl
    def pytest_flopynet_round_end(self, round, metrics, execution) -> None:
        import allure
        with allure.step(f"{metrics.end_time:.1f} s: round {round} ends, accuracy {metrics.accuracy:.4f}, "
                         f"{len(metrics.participants)} updates, {len(metrics.stragglers)} stragglers"):
            pass


def record(result, outcomes) -> None:
    """Labels, parameters, a step per gate (passed or failed) and attachments of one finished run."""
    import allure

    config = result.config
    fl, net = config.fl_config, config.network_config
    allure.dynamic.epic(family(config, "flopynet"))
    allure.dynamic.feature(fl.aggregation_method)
    for kind in dict.fromkeys(str(e.event_type) for e in config.events):
        allure.dynamic.story(kind)
    allure.dynamic.severity(allure.severity_level.CRITICAL if outcomes else allure.severity_level.NORMAL)
    for name, value in [("scenario", config.name), ("seed", config.seed), ("backend", result.execution.backend),
                        ("model", fl.model_architecture), ("dataset", fl.dataset),
                        ("clients", f"{fl.clients_per_round} of {config.num_clients} per round"),
                        ("rounds", fl.total_rounds), ("topology", f"{net.topology_type}, {net.link_bandwidth_mbps:g} "
                                                                  f"Mbit/s, {net.base_latency_ms:g} ms")]:
        allure.dynamic.parameter(name, str(value))
    for outcome in outcomes:
        try:
            with allure.step(f"gate {outcome}"):
                if not outcome.passed:
                    raise AssertionError(str(outcome))  # marks the step failed
        except AssertionError:
            pass  # the test itself fails with every gate's verdict
    if result.report_dir is not None:
        attach_folder(Path(result.report_dir))


def attach_folder(folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        attach_file(path)


def attach_file(path: Path) -> None:
    import allure
    kind = ATTACHMENTS.get(path.suffix)
    if kind is not None and path.is_file():
        allure.attach.file(str(path), name=path.name, attachment_type=getattr(allure.attachment_type, kind))


ALLURE_VERSION = "3.18.0"
INSTALL_HINT = (f"install Allure 3 from npm: npm install --prefix .allure allure@{ALLURE_VERSION} "
                "(or put `allure` on PATH, or set FLOPYNET_ALLURE to its path)")


def find_cli(search: Path | None = None) -> str | None:
    """Allure 3's command: $FLOPYNET_ALLURE, ./.allure or ./node_modules (npm installs), then PATH."""
    import os
    import shutil
    if os.environ.get("FLOPYNET_ALLURE"):
        return os.environ["FLOPYNET_ALLURE"]
    base = search or Path.cwd()
    for candidate in (base / ".allure" / "node_modules" / ".bin" / "allure", base / "node_modules" / ".bin" / "allure"):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("allure")


def generate_html(results: Path, output: Path, name: str = "flopynet scenarios") -> Path:
    """An HTML report of an --alluredir folder, made by Allure 3 (Node.js; no Java) as one self-contained
    index.html that opens from disk (file://), no web server needed."""
    import json
    import subprocess
    import tempfile

    if not results.is_dir() or not any(results.glob("*-result.json")):
        raise FlopynetError(f"{results}: no Allure results here (run pytest with --alluredir {results})")
    cli = find_cli()
    if cli is None:
        raise UnavailableError(f"Allure 3 not found: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "allurerc.json"  # Allure 3 takes its awesome plugin's singleFile from a config file
        config.write_text(json.dumps({"name": name, "plugins": {"awesome": {"options": {"singleFile": True,
                                                                                      "reportName": name}}}}))
        proc = subprocess.run([cli, "generate", str(results), "--config", str(config), "--output", str(output)],
                              capture_output=True, text=True)
    if proc.returncode != 0 or not (output / "index.html").is_file():
        raise FlopynetError(f"allure generate failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return output / "index.html"
