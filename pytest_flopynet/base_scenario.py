"""BaseScenario: a scenario as a class, with setup, run and teardown hooks (the original
documentation's Python API). A scenario folder's scenario.py subclasses it; discovery finds them."""
from __future__ import annotations

from pathlib import Path

from .errors import FlopynetError
from .model import ScenarioConfig, load_scenario


class BaseScenario:
    """A scenario as a class. In a scenario folder's scenario.py, subclass it with a name ending in
    Scenario and either set `config` (a ScenarioConfig), override `build_config()`, or keep a
    scenario.yaml beside it; override the hooks to add events and checks:

        class PartitionScenario(BaseScenario):
            def setup(self, scenario):
                scenario.add_event(ScenarioEvent(...))
            def teardown(self, scenario, result):
                assert result.final_accuracy > 0.8
    """

    config: ScenarioConfig | None = None

    def __init__(self, config: ScenarioConfig | None = None, source: Path | None = None):
        self.source = Path(source) if source is not None else None
        self.config = config or type(self).config or self.build_config()

    @classmethod
    def from_file(cls, path: Path) -> BaseScenario:
        return cls(load_scenario(path), source=Path(path))

    def build_config(self) -> ScenarioConfig:
        """Default: the scenario.yaml beside the class's file."""
        if self.source is not None and (self.source.parent / "scenario.yaml").is_file():
            return load_scenario(self.source.parent / "scenario.yaml")
        raise FlopynetError(f"{self.source or type(self).__name__}: {type(self).__name__} has no config: set "
                            "`config`, override build_config(), or put a scenario.yaml beside it")

    def setup(self, scenario) -> None:
        """Before the run: add events (scenario.add_event), timed callbacks (@scenario.at) ..."""

    def run(self, scenario):
        """The run itself; returns the ScenarioResult."""
        return scenario.run()

    def teardown(self, scenario, result) -> None:
        """After the run, also when it failed (result is then None)."""

    def execute(self, **options):
        """setup, run, teardown on a fresh session Scenario (options as for session.Scenario)."""
        from .session import Scenario
        scenario = Scenario(self.config, source=self.source, **options)
        return self.execute_on(scenario)

    def execute_on(self, scenario):
        self.setup(scenario)
        result = None
        try:
            result = self.run(scenario)
            return result
        finally:
            self.teardown(scenario, result)
