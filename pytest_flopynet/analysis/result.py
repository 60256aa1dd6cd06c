"""What `scenario.run()` returns: plain values for pytest's assertion rewriting, and the full results."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import ScenarioConfig, ScenarioState


@dataclass
class ScenarioResult:
    config: ScenarioConfig
    execution: Any  # ScenarioExecution
    analysis: dict[str, Any]
    report_dir: Path | None = None
    gate_outcomes: list = field(default_factory=list)

    @property
    def state(self) -> ScenarioState:
        return self.execution.state

    @property
    def summary(self) -> dict[str, Any]:
        return self.analysis["execution_summary"]

    @property
    def final_accuracy(self) -> float:
        return self.summary["final_accuracy"]

    @property
    def final_loss(self) -> float:
        return self.summary["final_loss"]

    @property
    def rounds_completed(self) -> int:
        return self.summary["fl_rounds_completed"]

    @property
    def duration_seconds(self) -> float:
        return self.summary["total_duration_seconds"]

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return self.analysis["rounds"]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.analysis["events"]

    @property
    def metrics(self):
        """The collector: series(name) gives (times, values) in scenario seconds."""
        return self.execution.metrics

    def __getitem__(self, key: str) -> Any:
        return self.analysis[key]

    def to_json(self) -> str:
        return json.dumps(self.analysis, indent=2, sort_keys=False, default=float) + "\n"
