"""basic_fl_training written as a pytest test: the fixtures build it from the scenario file, the
marks choose its family and gates, and the test asserts on the results."""
import pytest

# The CNN of the scenario: 3x3 convolutions 3->64->128->256 and a linear layer 256*4*4 -> 10.
CNN_PARAMETERS = (3 * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (128 * 256 * 9 + 256) + (256 * 4 * 4 * 10 + 10)


@pytest.mark.basic_fl_training
@pytest.mark.scenario("basic_fl_training_ci")
@pytest.mark.gate("final_accuracy >= 0.7", "efficiency_analysis.communication_cost.bytes_per_round <= 3e7")
def test_fedavg_trains_the_cnn_on_a_stable_network(scenario):
    result = scenario.run()
    assert result.rounds_completed == 10
    # no events: every selected client takes part in every round
    assert all(len(r["participants"]) == 8 and not r["stragglers"] for r in result.rounds)
    # each round moves the float32 model down to 8 clients and back up from 8
    cost = result["custom_analysis"]["efficiency_analysis"]["communication_cost"]
    assert cost["bytes_per_round"] == 2 * 8 * 4 * CNN_PARAMETERS
    assert result.final_accuracy >= 0.7
