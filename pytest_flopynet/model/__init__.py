"""The scenario model, plain data: dataclasses, the specs of rules and event types, load/save, the
checks that need only the scenario, the JSON Schema. It imports no other part of the package."""
from .config import (FAMILIES, AnalysisConfig, EventType, FLConfig, NetworkConfig, ResourceRequirements, ScenarioConfig,
                     ScenarioEvent, ScenarioState, family)
from .gates import Gate, GateSyntaxError, merge_gates, parse_gate
from .io import ScenarioWarning, check, dumps, from_dict, load_scenario, loads, save_scenario, to_dict, validate
from .schema import scenario_schema
from .specs import (AGGREGATION_RULES, EVENT_SPECS, AggregationSpec, EventSpec, Param, by_client_number, client_number,
                    event_clients, event_duration, event_spec, register_rule, rule_spec)

__all__ = ["AGGREGATION_RULES", "EVENT_SPECS", "FAMILIES", "family", "AggregationSpec", "AnalysisConfig", "EventSpec", "EventType",
           "FLConfig", "Gate", "GateSyntaxError", "NetworkConfig", "Param", "ResourceRequirements", "ScenarioConfig",
           "ScenarioEvent", "ScenarioState", "ScenarioWarning", "by_client_number", "check", "client_number", "dumps",
           "event_clients", "event_duration", "event_spec", "from_dict", "load_scenario", "loads", "merge_gates",
           "parse_gate", "register_rule", "rule_spec", "save_scenario", "scenario_schema", "to_dict", "validate"]
