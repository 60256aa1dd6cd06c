"""The quickstart scenario written as a pytest test: fixtures build it, events compose by fixtures."""
import pytest

from pytest_flopynet import ScenarioEvent, event_fixture

slow_server = event_fixture(ScenarioEvent(
    event_type="network_bandwidth_limit", trigger_time=0.5, target="server_links",
    parameters={"bandwidth_limit_mbps": 10}, duration=1.0,
    description="the server's uplink drops to 10 Mbit/s for a second"))


@pytest.mark.scenario("quickstart")
@pytest.mark.gate("final_accuracy >= 0.9")
def test_quickstart_trains(scenario):
    result = scenario.run()
    assert result.rounds_completed == 20
    assert result.final_accuracy >= 0.9


@pytest.mark.scenario("quickstart")
def test_quickstart_survives_a_slow_server(scenario, slow_server):
    result = scenario.run()
    (event,) = result.events
    assert (event["start_time"], event["end_time"]) == (0.5, 1.5)
    assert result.final_accuracy >= 0.9
