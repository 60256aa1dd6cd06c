"""Another package adds an aggregation rule, a backend and an executor through entry points, and a
scenario uses all three: validation knows the rule's parameters, the run uses its aggregator."""
import json
import subprocess
import sys
import textwrap

PACKAGE = '''
import torch

from pytest_flopynet.fl.aggregation import Rule
from pytest_flopynet.fl.executors import SequentialExecutor
from pytest_flopynet.model import AggregationSpec, Param
from pytest_flopynet.network.sim import SimNetwork

CALLS = {"aggregate": 0, "executor": 0}


class FirstUpdate:
    """Keeps the k-th update as the new global model."""

    def __init__(self, k):
        self.k = k

    def aggregate(self, global_params, updates, weights, state):
        CALLS["aggregate"] += 1
        return updates[self.k - 1].clone()


RULE = Rule(AggregationSpec("kth_update", "The k-th update wins.",
                            {"k": Param({"type": "integer", "minimum": 1}, 1, "Which update.")}),
            lambda parameters: FirstUpdate(**{"k": 1, **parameters}))


class QuietNetwork(SimNetwork):
    name = "quiet"


def counting_executor(model, **settings):
    CALLS["executor"] += 1
    return SequentialExecutor(model, **settings)
'''

ENTRY_POINTS = """[pytest_flopynet.rules]
kth_update = other_pkg:RULE
[pytest_flopynet.backends]
quiet = other_pkg:QuietNetwork
[pytest_flopynet.executors]
counting = other_pkg:counting_executor
"""

SCRIPT = '''
import json, sys
import other_pkg
from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig, ScenarioValidationError, run_scenario, validate

def config(**parameters):
    return ScenarioConfig(name="other", duration_minutes=5, fl_config=FLConfig(
        model_architecture="logreg", total_rounds=2, clients_per_round=3, client_data_sizes=[40, 40, 40],
        aggregation_method="kth_update", aggregation_parameters=parameters), network_config=NetworkConfig(node_count=4))

out = {}
try:
    validate(config(k=0))
except ScenarioValidationError as exc:
    out["error"] = str(exc)
result = run_scenario(config(k=2), seed=3, backend="quiet", executor="counting")
out.update(rounds=result.rounds_completed, backend=result.analysis["backend"], calls=other_pkg.CALLS)
print(json.dumps(out))
'''


def test_a_rule_a_backend_and_an_executor_from_another_package(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "other_pkg.py").write_text(textwrap.dedent(PACKAGE))
    dist = site / "other_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: other-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    script = tmp_path / "use.py"
    script.write_text(SCRIPT)
    env_path = f"{site}:{':'.join(p for p in sys.path if p)}"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env={"PYTHONPATH": env_path})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["error"] == "<python>: fl_config.aggregation_parameters.k: 0 is less than the minimum of 1"
    assert out["rounds"] == 2 and out["backend"] == "quiet"
    assert out["calls"] == {"aggregate": 2, "executor": 1}  # one aggregation per round, one executor per run
    # the command line offers the other package's executor too
    proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "run", "--help"], capture_output=True, text=True,
                          env={"PYTHONPATH": env_path})
    assert "counting" in proc.stdout
