"""Write a run's files into its report folder; contents depend only on the scenario and seed."""
from __future__ import annotations

import json
from pathlib import Path

from ..model import dumps


def write_reports(result, folder: Path) -> list[str]:
    """analysis.json, metrics.json, metrics.csv (export_data), the resolved scenario.yaml, and the
    PNG plots when the scenario's analysis_config.generate_plots is set."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = result.execution.metrics
    files = {"scenario.yaml": dumps(result.config),
             "metrics.json": json.dumps(metrics.to_dict(), indent=1) + "\n"}
    if result.config.analysis_config.export_data:
        files["metrics.csv"] = metrics.to_csv()
    plots = []
    if result.config.analysis_config.generate_plots:
        from .plots import plot_run  # matplotlib loads only when a scenario asks for plots
        plots = plot_run(result.analysis, metrics.to_dict()["samples"], folder)
    result.analysis["export_files"] = ["analysis.json", *files, *plots]
    files["analysis.json"] = result.to_json()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    result.report_dir = folder
    return result.analysis["export_files"]
