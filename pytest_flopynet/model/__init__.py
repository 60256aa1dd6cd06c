"""The scenario model: dataclasses, load/save, validation, JSON Schema."""
from .config import (AnalysisConfig, EventType, FLConfig, NetworkConfig, ResourceRequirements, ScenarioConfig,
                     ScenarioEvent, ScenarioState)
from .io import ScenarioWarning, check, dumps, from_dict, load_scenario, loads, save_scenario, to_dict, validate
from .rules import event_duration
from .schema import scenario_schema

__all__ = ["AnalysisConfig", "EventType", "FLConfig", "NetworkConfig", "ResourceRequirements", "ScenarioConfig",
           "ScenarioEvent", "ScenarioState", "ScenarioWarning", "check", "dumps", "event_duration", "from_dict",
           "load_scenario", "loads", "save_scenario", "scenario_schema", "to_dict", "validate"]
