"""network_instability written as a pytest test: the scenario's own four events, plus one more
added by an event fixture, with gates on how FedProx rides them out."""
import pytest

from pytest_flopynet import ScenarioEvent, event_fixture

# A second partition, of client_3 and client_4, at 10 minutes for one and a half minutes.
second_partition = event_fixture(ScenarioEvent(
    event_type="network_partition", trigger_time=780, target="client_group",
    parameters={"partitioned_clients": ["client_3", "client_4"], "partition_duration": 90},
    description="a second partition, of client_3 and client_4"))


@pytest.mark.network_instability
@pytest.mark.scenario("network_instability_ci")
@pytest.mark.gate("final_accuracy >= 0.85", "robustness_metrics.max_accuracy_drop <= 0.1")
def test_fedprox_survives_the_events_and_a_second_partition(scenario, second_partition):
    result = scenario.run()
    # the file's four events and the fixture's partition, each at its time
    assert [(e["event_type"], e["start_time"]) for e in result.events] == [
        ("network_latency_increase", 150.0), ("network_packet_loss", 300.0), ("network_bandwidth_limit", 450.0),
        ("network_partition", 600.0), ("network_partition", 780.0)]
    assert result.events[-1]["end_time"] == 870.0
    impacts = result["custom_analysis"]["network_impact_analysis"]["event_impacts"]
    assert len(impacts) == 5
    # the round running into the second partition waits for client_3 and client_4 to come back
    spanning = [r for r in result.rounds if r["start_time"] < 780 < r["end_time"]]
    assert spanning and spanning[0]["end_time"] >= 870.0
    robustness = result["custom_analysis"]["robustness_metrics"]
    assert robustness["recovery_time_seconds"] is not None
