"""custom_edge_scenario written as a pytest test: an intermittent edge client, and the same run
with a hard failure added through a parametrised event fixture."""
import pytest

from pytest_flopynet import ScenarioEvent, event_fixture

hard_failure = event_fixture(
    lambda client: ScenarioEvent(event_type="client_failure", trigger_time=100, target=client,
                                 parameters={"failure_type": "hard_failure"}, duration=200),
    params=["client_4", "client_7"])


@pytest.mark.custom_edge
@pytest.mark.scenario("custom_edge_scenario_ci")
@pytest.mark.gate("final_accuracy >= 0.8")
def test_edge_clients_failing(scenario, hard_failure):
    result = scenario.run()
    failed = hard_failure.target
    # the hard-failed client is not among the participants of any round that overlaps its outage
    during = [r for r in result.rounds if r["start_time"] < 300 and r["end_time"] > 100]
    assert during and all(failed not in r["participants"] for r in during)
    # a round that had picked it before it failed closes without it: it is that round's straggler
    for r in during:
        assert failed in r["stragglers"] or len(r["participants"]) == 5
    # FedAvg still reaches the gate with the other eight
    assert result.final_accuracy >= 0.8
