"""Hooks other plugins and conftest files implement to react to a running scenario."""


def pytest_flopynet_event(event, phase, execution):
    """An event started (phase "start") or ended (phase "end") at execution's current scenario time."""


def pytest_flopynet_round_end(round, metrics, execution):
    """FL round `round` finished; `metrics` is its RoundRecord (times in scenario seconds)."""
