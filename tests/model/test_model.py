"""The scenario model: load/save round trips, defaults, and one clear error per malformed input."""
import json

import jsonschema
import pytest
import yaml

from pytest_flopynet import (AnalysisConfig, EventType, FLConfig, NetworkConfig, ResourceRequirements,
                             ScenarioConfig, ScenarioEvent, ScenarioState, ScenarioValidationError, load_scenario,
                             save_scenario, scenario_schema)
from pytest_flopynet.model import ScenarioWarning, from_dict, to_dict

# The seed's network_instability scenario, field for field.
NETWORK_INSTABILITY = ScenarioConfig(
    name="network_instability", description="FL training under varying network conditions", version="1.0.0",
    author="FLOPY-NET Team", duration_minutes=45,
    fl_config=FLConfig(model_type="pytorch", model_architecture="lstm",
                       model_parameters={"input_size": 100, "hidden_size": 128, "num_layers": 2, "num_classes": 5},
                       total_rounds=30, clients_per_round=6, local_epochs=3, batch_size=64, learning_rate=0.001,
                       dataset="synthetic_time_series", data_distribution="non_iid",
                       client_data_sizes=[800, 1200, 900, 1100, 950, 1050], aggregation_method="fedprox",
                       aggregation_parameters={"mu": 0.1}),
    network_config=NetworkConfig(topology_type="mesh", node_count=8, switch_count=4, link_bandwidth_mbps=50,
                                 base_latency_ms=20, controller_type="ryu", qos_enabled=True,
                                 traffic_prioritization=True),
    events=[
        ScenarioEvent("network_latency_increase", 300, "all_links",
                      {"latency_increase_ms": 30, "affected_percentage": 0.5}, 180,
                      "Gradual latency increase on 50% of links"),
        ScenarioEvent("network_packet_loss", 600, "client_links", {"packet_loss_rate": 0.02, "burst_duration": 5},
                      120, "2% packet loss on client connections"),
        ScenarioEvent("network_bandwidth_limit", 900, "server_links", {"bandwidth_limit_mbps": 25}, 240,
                      "Bandwidth limitation on server connections"),
        ScenarioEvent("network_partition", 1200, "client_group",
                      {"partitioned_clients": ["client_1", "client_2"], "partition_duration": 90},
                      description="Network partition affecting 2 clients"),
    ],
    analysis_config=AnalysisConfig(
        metrics_to_collect=["accuracy", "loss", "convergence_time", "communication_cost", "network_latency",
                            "packet_loss", "bandwidth_utilization", "client_participation_rate", "model_staleness"],
        generate_plots=True, export_data=True, custom_analysis=["network_impact_analysis", "robustness_metrics"]),
    requirements=ResourceRequirements(min_memory_gb=12, min_cpu_cores=6, estimated_duration_minutes=45),
)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_and_load_round_trip(tmp_path, suffix):
    path = save_scenario(NETWORK_INSTABILITY, tmp_path / f"s{suffix}")
    loaded = load_scenario(path)
    assert loaded == NETWORK_INSTABILITY
    assert loaded.events[3].event_type is EventType.NETWORK_PARTITION
    assert to_dict(loaded) == to_dict(NETWORK_INSTABILITY)
    # and the written file is plain data with the seed's field names
    data = json.loads(path.read_text()) if suffix == ".json" else yaml.safe_load(path.read_text())
    assert data["events"][0]["event_type"] == "network_latency_increase"
    assert list(data["fl_config"])[:3] == ["model_type", "model_architecture", "model_parameters"]


def test_the_custom_edge_example_loads_with_defaults():
    """The seed's custom scenario names only a few fields; the rest take documented defaults."""
    config = from_dict({
        "name": "custom_edge_scenario", "description": "Edge computing FL with intermittent connectivity",
        "version": "1.0.0", "author": "Research Team", "duration_minutes": 40,
        "fl_config": {"model_type": "pytorch", "model_architecture": "mobilenet_v2", "total_rounds": 25,
                      "clients_per_round": 5, "local_epochs": 10, "aggregation_method": "fedavg"},
        "events": [{"event_type": "client_failure", "trigger_time": 600, "target": "client_2",
                    "parameters": {"failure_type": "intermittent", "reconnect_probability": 0.3},
                    "duration": 300}],
    })
    assert config.network_config == NetworkConfig()
    assert config.fl_config.batch_size == 32 and config.fl_config.dataset == "digits"
    assert config.num_clients == NetworkConfig().node_count - 1
    assert config.events[0].duration == 300


def test_states_and_event_types_are_the_seeds():
    assert [s.value for s in ScenarioState] == ["pending", "initializing", "running", "paused", "completed",
                                                "failed", "cancelled"]
    assert len(EventType) == 13 and EventType("security_event") is EventType.SECURITY_EVENT


def _base() -> dict:
    return to_dict(NETWORK_INSTABILITY)


def _errors(data: dict) -> list[tuple[str, str]]:
    """Every problem a run would report: the file's own (from_dict), then registries and topology."""
    from pytest_flopynet.checks import check_buildable
    with pytest.raises(ScenarioValidationError) as info:
        check_buildable(from_dict(data, "bad.yaml"), "bad.yaml")
    return info.value.problems


def test_unknown_event_type():
    data = _base()
    data["events"][2]["event_type"] = "network_meltdown"
    (problem,) = _errors(data)
    assert problem[0] == "events[2].event_type"
    assert "'network_meltdown' is not one of" in problem[1] and "network_partition" in problem[1]


def test_negative_trigger_time():
    data = _base()
    data["events"][1]["trigger_time"] = -5
    assert _errors(data) == [("events[1].trigger_time", "-5 is less than the minimum of 0")]


def test_unknown_key():
    data = _base()
    data["network_config"]["link_bandwith_mbps"] = 10
    ((path, reason),) = _errors(data)
    assert path == "network_config.link_bandwith_mbps"
    assert reason.startswith("unknown key") and "link_bandwidth_mbps" in reason


def test_string_for_an_int():
    data = _base()
    data["fl_config"]["total_rounds"] = "thirty"
    assert _errors(data) == [("fl_config.total_rounds", "expected integer, got string 'thirty'")]


def test_a_bool_is_not_an_int():
    data = _base()
    data["fl_config"]["local_epochs"] = True
    assert _errors(data) == [("fl_config.local_epochs", "expected integer, got boolean True")]


@pytest.mark.parametrize("change, path, words", [
    (lambda d: d["fl_config"].update(aggregation_method="krum", aggregation_parameters={"f": 2}),
     "fl_config.aggregation_parameters.f", "n > 2f + 2"),
    (lambda d: d["fl_config"].update(clients_per_round=7), "fl_config.clients_per_round", "only 6 clients"),
    (lambda d: d["events"][3].update(trigger_time=2701), "events[3].trigger_time", "past the scenario's end"),
    (lambda d: d["events"][0]["parameters"].update(latency_ms=3), "events[0].parameters.latency_ms",
     "unknown parameter of network_latency_increase"),
    (lambda d: d["events"][0]["parameters"].update(affected_percentage=1.5),
     "events[0].parameters.affected_percentage", "greater than the maximum of 1"),
    (lambda d: d["events"][2].update(target="server_linkz"), "events[2].target", "unknown target 'server_linkz'"),
    (lambda d: d["events"][3]["parameters"].update(partitioned_clients=["client_1", "client_9"]),
     "events[3].parameters", "'client_9' is not a client"),
    (lambda d: d["fl_config"].update(aggregation_method="fedmagic"), "fl_config.aggregation_method", "unknown"),
    (lambda d: d.update(gates=["final_accuracy >= high"]), "gates[0]", "cannot parse gate"),
    (lambda d: d["fl_config"].update(model_architecture="lstn"), "fl_config.model_architecture",
     "unknown model 'lstn' (available: cnn, logreg, lstm, mlp, mobilenet_v2, resnet18)"),
    (lambda d: d["fl_config"]["model_parameters"].update(hidden_layers=[64]), "fl_config.model_parameters",
     "hidden_layers not accepted by model 'lstm' (accepted: hidden_size, input_size, num_classes, num_layers)"),
    (lambda d: d["fl_config"].update(dataset="cifar_10"), "fl_config.dataset", "unknown data set 'cifar_10'"),
    (lambda d: d["fl_config"].update(dataset="synthetic_alpha_beta(1)"), "fl_config.dataset",
     "synthetic_alpha_beta takes 2 arguments (alpha, beta), got 1"),
    (lambda d: d["fl_config"].update(dataset="synthetic_alpha_beta(1, os.system)"), "fl_config.dataset",
     "arguments must be plain numbers"),
    (lambda d: d.update(duration_minutes=0), "duration_minutes", "less than or equal to the minimum of 0"),
])
def test_impossible_values(change, path, words):
    data = _base()
    change(data)
    problems = _errors(data)
    assert [p for p, _ in problems] == [path]
    assert words in problems[0][1]


def test_all_problems_are_reported_at_once():
    data = _base()
    data["fl_config"]["total_rounds"] = -1
    data["events"][0]["trigger_time"] = "soon"
    assert {p for p, _ in _errors(data)} == {"fl_config.total_rounds", "events[0].trigger_time"}


def test_node_count_smaller_than_the_clients_warns_with_both_numbers():
    data = _base()
    data["network_config"]["node_count"] = 5
    with pytest.warns(ScenarioWarning, match=r"node_count is 5 but the scenario has 6 clients"):
        from_dict(data, "seed.yaml")


def test_python_configs_are_validated_like_files():
    from pytest_flopynet import validate
    bad = ScenarioConfig(name="x", fl_config=FLConfig(clients_per_round=0))
    with pytest.raises(ScenarioValidationError, match=r"<python>: fl_config.clients_per_round: 0 is less than"):
        validate(bad)


def test_published_schema_accepts_good_files_and_rejects_bad_ones():
    schema = scenario_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_base(), schema)
    data = _base()
    data["events"][0]["trigger_time"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
    assert schema["properties"]["fl_config"]["properties"]["batch_size"]["default"] == 32


def test_the_published_schema_shows_each_event_types_and_rules_parameters_with_their_defaults():
    schema = scenario_schema()

    def parameters(where: list, field: str, value: str) -> dict:
        (rule,) = [r for r in where if r["if"]["properties"][field]["const"] == value]
        return next(iter(rule["then"]["properties"].values()))

    events = schema["properties"]["events"]["items"]["allOf"]
    failure = parameters(events, "event_type", "client_failure")
    assert failure["properties"]["reconnect_probability"]["default"] == 0.5
    assert failure["required"] == ["failure_type"] and failure["additionalProperties"] is False
    assert parameters(events, "event_type", "model_poisoning")["properties"]["scale"]["default"] == 10.0
    rules = schema["properties"]["fl_config"]["allOf"]
    assert parameters(rules, "aggregation_method", "fedadam")["properties"]["server_lr"]["default"] == 0.01
    assert parameters(rules, "aggregation_method", "krum")["required"] == ["f"]
    # an editor using the schema flags what validation flags
    data = _base()
    jsonschema.validate(data, schema)
    data["events"][0]["parameters"]["latency_ms"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
