"""Allure: labels, parameters, steps and attachments in allure-pytest's results, and the HTML report
that Allure 3 makes of them, opened in headless Chromium."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_flopynet.report.allure import INSTALL_HINT, find_cli

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """\
name: plotted
duration_minutes: 10
tags: [network_instability]
fl_config: {model_architecture: logreg, total_rounds: 4, clients_per_round: 3, learning_rate: 0.2, local_epochs: 3,
            client_data_sizes: [100, 100, 100]}
network_config: {topology_type: star, node_count: 4, link_bandwidth_mbps: 10, base_latency_ms: 5}
events:
  - {event_type: network_latency_increase, trigger_time: 0.1, target: all_links,
     parameters: {latency_increase_ms: 40}, duration: 0.2}
analysis_config: {generate_plots: true}
gates: [fl_rounds_completed >= 4]
"""
FILES = ["accuracy_loss.png", "analysis.json", "log", "metrics.csv", "metrics.json", "network.png", "participation.png",
         "rounds.png", "scenario.yaml"]


@pytest.fixture(scope="module")
def allure_results(tmp_path_factory):
    project = tmp_path_factory.mktemp("allure_project")
    (project / "plotted.scenario.yaml").write_text(SCENARIO)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--alluredir", "results"],
                          cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return project


def test_results_carry_labels_parameters_steps_and_attachments(allure_results):
    (result,) = [json.loads(p.read_text()) for p in (allure_results / "results").glob("*-result.json")]
    labels = {(label["name"], label["value"]) for label in result["labels"]}
    assert {("epic", "network_instability"), ("feature", "fedavg"), ("story", "network_latency_increase"),
            ("severity", "critical")} <= labels
    params = {p["name"]: p["value"] for p in result["parameters"]}
    assert params["backend"] == "'sim'" and params["model"] == "'logreg'" and params["rounds"] == "'4'"
    steps = [s["name"] for s in result["steps"]]
    assert sum(" round " in s and "ends" in s for s in steps) == 4
    gates = [(s["name"], s["status"]) for s in result["steps"] if s["name"].startswith("gate ")]
    assert gates and all(status == ("passed" if "[PASS]" in name else "failed") for name, status in gates), gates
    assert any(s.endswith("network_latency_increase start on all_links") and s.startswith("0.1 s") for s in steps)
    assert any("network_latency_increase end" in s and s.startswith("0.3 s") for s in steps)
    assert sorted(a["name"] for a in result["attachments"]) == FILES
    for a in result["attachments"]:
        assert (allure_results / "results" / a["source"]).stat().st_size > 0


def test_the_html_report_shows_each_scenario_and_its_attachments(allure_results, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")
    if find_cli(ROOT) is None:
        pytest.skip(f"Allure 3 not found: {INSTALL_HINT}")
    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "report", "--allure",
                           str(allure_results / "results"), "-o", str(report)], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"HTML report: {report / 'index.html'} (one file: open it in a browser)"
    assert [p.name for p in report.iterdir() if p.suffix == ".html"] == ["index.html"]  # one file, opened from disk
    (test_id,) = json.loads((report / "test-results.json").read_text())["byId"]
    url = (report / "index.html").as_uri() + f"#/{test_id}"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "plotted" in dom and "Critical" in dom
    for name in FILES:
        assert name in dom, name
    assert "network_latency_increase start on all_links" in dom


def test_a_test_of_several_seeds_attaches_their_spread(tmp_path):
    """Allure steps and files come from the first seed's run (the others may run in other processes);
    seeds.json and seeds.png, what the gates judged, are attached beside them."""
    (tmp_path / "plotted.scenario.yaml").write_text(SCENARIO)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--alluredir", "results",
                           "--flopynet-seeds", "3", "--flopynet-seeds-workers", "2"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*-result.json")]
    assert sorted(a["name"] for a in result["attachments"]) == sorted([*FILES, "seeds.json", "seeds.png"])
    assert sum(" round " in s["name"] and "ends" in s["name"] for s in result["steps"]) == 4
    source = next(a["source"] for a in result["attachments"] if a["name"] == "seeds.json")
    seeds = json.loads((tmp_path / "results" / source).read_text())
    assert len(seeds["runs"]) == 3 and all(r["fl_rounds_completed"] == 4 for r in seeds["runs"])
