"""Whatever a file holds, loading it gives a scenario or one clear error: a corpus of files that used to
crash, hang or blow up the loader, and Hypothesis mutating the built-in scenarios."""
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_flopynet import ScenarioConfig, ScenarioValidationError
from pytest_flopynet.model import loads

ROOT = Path(__file__).resolve().parents[2]
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
CORPUS = {  # name -> (text, field path the error names, words of its reason)
    "deep_brackets.yaml": ("[" * 100_000 + "]" * 100_000, "line 1 column", "maximum nesting depth"),
    "deep_json.json": ("[" * 100_000 + "]" * 100_000, "", "nested too deep"),
    "alias_bomb.yaml": (BOMB, "(top level)", "expands to more than"),
    "recursive_alias.yaml": ("a: &a [*a]\n", "(top level)", "contains itself"),
    "latin1.yaml": ("name: caf\xe9\n".encode("latin-1"), "(top level)", "not UTF-8 text: byte 0xe9 at offset 9"),
    "mixed_keys.yaml": ("1: a\nfoo: b\n", "(top level)", "key 1 is not a string"),
    "model_parameter_keys.yaml": ("name: x\nfl_config: {model_parameters: {1: 2}}\n", "fl_config.model_parameters",
                                  "key 1 is not a string"),
    "duplicate_key.yaml": ("name: a\nname: b\n", "line 2 column 1", "duplicate key 'name'"),
    "duplicate_key.json": ('{"name": "a", "name": "b"}', "(top level)", "duplicate key 'name'"),
    "nan_json.json": ('{"name": "a", "duration_minutes": NaN}', "(top level)", "NaN is not a number"),
    "nan_learning_rate.yaml": ("name: x\nfl_config: {learning_rate: .nan}\n", "fl_config.learning_rate",
                               "expected a finite number, got nan"),
    "nan_bandwidth.yaml": ("name: x\nnetwork_config: {link_bandwidth_mbps: .nan}\n", "network_config.link_bandwidth_mbps",
                           "finite"),
    "inf_duration.yaml": ("name: x\nduration_minutes: .inf\n", "duration_minutes", "expected a finite number, got inf"),
    "float_rounds.yaml": ("name: x\nfl_config: {total_rounds: 2.0}\n", "fl_config.total_rounds",
                          "expected integer, got number 2.0"),
    "partitioned_string.yaml": ("name: x\nduration_minutes: 1\nevents: [{event_type: network_partition, trigger_time: 1, "
                                "target: client_group, parameters: {partitioned_clients: client_1}}]\n",
                                "events[0].parameters.partitioned_clients", "expected array"),
    "partitioned_nested.yaml": ("name: x\nduration_minutes: 1\nevents: [{event_type: network_partition, trigger_time: 1, "
                                "target: client_group, parameters: {partitioned_clients: [[client_1]]}}]\n",
                                "events[0].parameters.partitioned_clients[0]", "expected string"),
    "policy_list.yaml": ("name: x\nduration_minutes: 1\nevents: [{event_type: policy_change, trigger_time: 1, "
                         "target: policy_engine, parameters: {policy_name: [a]}}]\n",
                         "events[0].parameters.policy_name", "expected string"),
    "million_hosts.yaml": ("name: x\nnetwork_config: {node_count: 1000000}\n", "network_config.node_count",
                           "past the limit of 200,000"),
    "billion_rounds.yaml": ("name: x\nfl_config: {total_rounds: 1000000000}\n", "fl_config.total_rounds",
                            "past the limit of 100,000"),
    "ten_million_minutes.yaml": ("name: x\nduration_minutes: 10000000\n", "duration_minutes", "past the limit"),
    "huge_value.yaml": ("name: x\nfl_config: {total_rounds: '" + "x" * 1_000_000 + "'}\n", "fl_config.total_rounds",
                        "characters)"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_bad_file_is_one_short_error_naming_the_file_and_the_field(name):
    text, where, words = CORPUS[name]
    tracemalloc.start()
    try:
        with pytest.raises(ScenarioValidationError) as info:
            loads(text, name, "json" if name.endswith(".json") else "yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    lines = message.splitlines()
    assert all(line.startswith(f"{name}: ") for line in lines), message[:300]
    assert any(line.startswith(f"{name}: {where}") and words in line for line in lines), message[:300]
    assert len(message) < 4096
    assert peak < 100 * 2**20  # the alias bomb took 1.1 GiB before


def test_the_command_line_says_it_in_one_line_per_problem(tmp_path):
    files = []
    for name in ("alias_bomb.yaml", "latin1.yaml", "mixed_keys.yaml", "float_rounds.yaml"):
        text = CORPUS[name][0]
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        files.append(str(path))
    proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "validate", *files], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert {line.split(": ")[0] for line in lines} == set(files)  # a line per problem, naming its file
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_a_limit_is_raised_on_purpose(monkeypatch):
    text = "name: x\nnetwork_config: {node_count: 11}\nfl_config: {total_rounds: 200000}\n"
    with pytest.raises(ScenarioValidationError, match="FLOPYNET_LIMITS=rounds=N"):
        loads(text)
    monkeypatch.setenv("FLOPYNET_LIMITS", "rounds=1e6")
    assert loads(text).fl_config.total_rounds == 200000


# -- Hypothesis mutating the built-in scenarios ---------------------------------------------------

SEEDS = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "scenarios").rglob("*.yaml"))
         if p.name == "scenario.yaml" or p.name.endswith(".scenario.yaml")]
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["client_1", "client_99", "all_links", "fedavg", "krum", "s1-s2", ""]))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


def _paths(data, path=()):
    yield path
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*path, i))


@st.composite
def mutated(draw):
    """A built-in scenario with one to three places changed: a value replaced, a key dropped or added,
    a key made a number, or the text cut, wrapped in nesting or given an alias."""
    import copy
    data = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))[1:]
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        kind = draw(st.sampled_from(["replace", "drop", "add", "number_key", "nest"]))
        if kind == "replace":
            parent[path[-1]] = draw(VALUES)
        elif kind == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(VALUES)
        elif kind == "number_key" and isinstance(parent, dict):
            parent[draw(st.integers(0, 9))] = parent.pop(path[-1])
        elif kind == "nest":
            parent[path[-1]] = [[[parent[path[-1]]]]]
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    text_kind = draw(st.sampled_from(["as is", "cut", "alias", "bytes"]))
    if text_kind == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif text_kind == "alias":
        text = "x: &x [1, 2, 3]\n" + text.replace("description:", "description_alias: *x\ndescription:", 1)
    elif text_kind == "bytes":
        at = draw(st.integers(0, len(text)))
        return text.encode()[:at] + draw(st.binary(min_size=1, max_size=4)) + text.encode()[at:]
    return text


LONG = os.environ.get("CI") == "true"  # CI: at least 5,000 examples; a local run: a quick 300


@pytest.mark.filterwarnings("ignore::pytest_flopynet.model.ScenarioWarning")  # node_count < clients + 1: fine here
@settings(max_examples=5000 if LONG else 300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@pytest.mark.slow  # minutes: runs in CI or with --run-slow
@given(text=mutated())
def test_a_mutated_scenario_loads_or_is_one_clear_error(text):
    try:
        config = loads(text, "fuzzed.yaml")
    except ScenarioValidationError as exc:
        assert str(exc).startswith("fuzzed.yaml: ") and len(str(exc)) < 4096
    else:
        assert isinstance(config, ScenarioConfig)
