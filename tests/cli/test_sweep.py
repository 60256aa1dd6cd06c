"""flopynet sweep: seeds x --set combinations as runs of their own, checked against the same runs made here;
the groups' statistics by hand; Ray's engine against the local one on a two-node Ray test cluster."""
import json
import subprocess
import sys

import pytest

from pytest_flopynet import load_scenario, run_scenario
from pytest_flopynet.analysis.spread import describe
from pytest_flopynet.commands.sweep import combinations, parse_seeds, parse_set, sweep, with_overrides
from pytest_flopynet.errors import FlopynetError

DIGITS = """\
name: digits_sweep
duration_minutes: 10
fl_config: {model_architecture: logreg, total_rounds: 2, clients_per_round: 3, learning_rate: 0.2,
            client_data_sizes: [60, 60, 60]}
network_config: {node_count: 4, link_bandwidth_mbps: 10, base_latency_ms: 5}
"""


def test_seeds_sets_and_their_combinations():
    assert parse_seeds("1-3,9,2") == [1, 2, 3, 9]
    assert parse_set("fl_config.aggregation_method=fedavg,fedprox") == ("fl_config.aggregation_method",
                                                                        ["fedavg", "fedprox"])
    assert parse_set("fl_config.aggregation_parameters.mu=0,0.1")[1] == [0, 0.1]
    assert combinations([("a", [1, 2]), ("b", ["x", "y"])]) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                                                {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert combinations([]) == [{}]
    data = {"fl_config": {"learning_rate": 0.1}}
    assert with_overrides(data, {"fl_config.aggregation_parameters.mu": 1}) == {
        "fl_config": {"learning_rate": 0.1, "aggregation_parameters": {"mu": 1}}}
    assert data == {"fl_config": {"learning_rate": 0.1}}  # a copy
    for bad, words in [("5-1", "runs backwards"), ("a", "not a seed"), ("", "no seed")]:
        with pytest.raises(FlopynetError, match=words):
            parse_seeds(bad)
    with pytest.raises(FlopynetError, match="expected KEY=VALUE"):
        parse_set("fl_config.learning_rate")


@pytest.fixture
def digits_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.scenario.yaml").write_text(DIGITS)
    return tmp_path / "d.scenario.yaml"


def test_a_local_sweep_gives_each_run_as_run_alone_and_each_groups_statistics(digits_file):
    out = sweep(str(digits_file), [1, 2], [parse_set("fl_config.learning_rate=0.05,0.2")], workers=2)
    assert [(r["overrides"]["fl_config.learning_rate"], r["seed"]) for r in out["runs"]] == [(0.05, 1), (0.05, 2),
                                                                                            (0.2, 1), (0.2, 2)]
    for r in out["runs"]:
        config = load_scenario(digits_file)
        config.fl_config.learning_rate = r["overrides"]["fl_config.learning_rate"]
        alone = run_scenario(config, seed=r["seed"])
        assert r["execution_summary"]["final_accuracy"] == alone.final_accuracy
        assert r["execution_summary"]["total_duration_seconds"] == alone.duration_seconds
    for group, runs in zip(out["groups"], (out["runs"][:2], out["runs"][2:])):
        acc = describe(r["execution_summary"]["final_accuracy"] for r in runs)
        assert group["n"] == 2 and group["metrics"]["final_accuracy"] == acc


def test_the_command_writes_json_and_refuses_bad_input_in_one_line(digits_file, tmp_path):
    cli = [sys.executable, "-m", "pytest_flopynet.cli", "sweep", str(digits_file), "--workers", "1", "-q"]
    done = subprocess.run([*cli, "--seeds", "3", "--json", str(tmp_path / "o.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("digits_sweep: final accuracy ")
    out = json.loads((tmp_path / "o.json").read_text())
    assert [r["seed"] for r in out["runs"]] == [3] and out["groups"][0]["n"] == 1
    bad = subprocess.run([*cli, "--seeds", "1", "--set", "fl_config.learning_rate=-1", "--json", "-"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().endswith("fl_config.learning_rate: -1 is less than or equal to the minimum of 0")
    assert len(bad.stderr.strip().splitlines()) == 1
    no_ray = subprocess.run([sys.executable, "-c", "import sys; sys.modules['ray'] = None; "
                             "from pytest_flopynet.cli import main; sys.exit(main(sys.argv[1:]))", *cli[3:],
                             "--seeds", "1", "--engine", "ray", "--json", "-"], capture_output=True, text=True)
    assert no_ray.returncode == 2
    assert no_ray.stderr.strip() == "flopynet sweep --engine ray needs Ray: pip install 'pytest-flopynet[ray]'"


def test_ray_on_a_two_node_test_cluster_gives_the_local_engines_results(digits_file):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'pytest-flopynet[ray]'")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        on_ray = sweep(str(digits_file), [1, 2], [parse_set("fl_config.learning_rate=0.05,0.2")], engine="ray")
    finally:
        ray.shutdown()
        cluster.shutdown()
    local = sweep(str(digits_file), [1, 2], [parse_set("fl_config.learning_rate=0.05,0.2")], workers=2)
    assert on_ray["runs"] == local["runs"]
    assert on_ray["groups"] == local["groups"]
