"""pytest-flopynet: federated-learning robustness scenarios as pytest tests."""
from .errors import FlopynetError, ScenarioValidationError, UnavailableError
from .model import (AnalysisConfig, EventType, FLConfig, NetworkConfig, ResourceRequirements, ScenarioConfig,
                    ScenarioEvent, ScenarioState, load_scenario, save_scenario, scenario_schema)
from .settings import RunSettings

__version__ = "0.1.0"

_LAZY = {  # these import torch; load them on first use so `import pytest_flopynet` stays fast
    "Scenario": "session", "run_scenario": "session", "validate": "checks", "ScenarioResult": "analysis.result",
    "event_fixture": "fixtures", "analyze_scenario": "analysis.analyzer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)


__all__ = ["AnalysisConfig", "EventType", "FLConfig", "FlopynetError", "NetworkConfig", "ResourceRequirements",
           "Scenario", "ScenarioConfig", "ScenarioEvent", "ScenarioResult", "ScenarioState",
           "ScenarioValidationError", "RunSettings", "UnavailableError", "analyze_scenario", "event_fixture", "load_scenario",
           "run_scenario", "save_scenario", "scenario_schema", "validate"]
