"""Write a run's files into its report folder; contents depend only on the scenario and seed."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from ..credentials import without_credentials
from ..model import dumps


def folder_name(text: str) -> str:
    """A name made safe as one path component: letters, digits, _ . - only (others become _), never
    empty, . or .., so a scenario name or test id cannot place a report outside its folder."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
    return name if name.strip(".") else "scenario"


def _shareable(config):
    """The scenario as written to a report: a GNS3 URL without its credentials."""
    template = config.network_config.gns3_template
    if isinstance(template, dict) and template.get("url"):
        template = {**template, "url": without_credentials(template["url"])}
        return dataclasses.replace(config, network_config=dataclasses.replace(config.network_config,
                                                                              gns3_template=template))
    return config


def write_reports(result, folder: Path, *, x_axis: str = "time", gates=None) -> list[str]:
    """analysis.json, metrics.json, metrics.csv (export_data), the resolved scenario.yaml, and the
    PNG plots when the scenario's analysis_config.generate_plots is set (x_axis "time" or "rounds"; the
    gates drawn on them: the scenario file's unless given)."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = result.execution.metrics
    files = {"scenario.yaml": dumps(_shareable(result.config)),
             "metrics.json": json.dumps(metrics.to_dict(), indent=1) + "\n"}
    if result.config.analysis_config.export_data:
        files["metrics.csv"] = metrics.to_csv()
    plots = []
    if result.config.analysis_config.generate_plots:
        from .plots import plot_run  # matplotlib loads only when a scenario asks for plots
        plots = plot_run(result.analysis, metrics.to_dict()["samples"], folder, x_axis=x_axis,
                         gates=result.config.gates if gates is None else gates)
    result.analysis["export_files"] = ["analysis.json", *files, *plots]
    files["analysis.json"] = result.to_json()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    result.report_dir = folder
    return result.analysis["export_files"]
