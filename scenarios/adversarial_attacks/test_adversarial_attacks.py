"""adversarial_attacks written as a pytest test: Krum and the strict anomaly-detection policy
against a label-flipping and a noise-adding client."""
import pytest


@pytest.mark.adversarial_attacks
@pytest.mark.scenario("adversarial_attacks_ci")
@pytest.mark.gate("security_analysis.attack_detection_rate >= 0.5")
def test_policy_engine_flags_the_byzantine_clients(scenario):
    result = scenario.run()
    security = result["custom_analysis"]["security_analysis"]
    assert security["active_policy"] == "strict_anomaly_detection"
    assert security["rejected_updates"] >= 1
    # the two attackers end with the lowest trust of all twelve clients
    trust = result["custom_analysis"]["trust_evolution"]["final_trust"]
    assert len(trust) == 12
    lowest_two = sorted(trust, key=trust.get)[:2]
    assert set(lowest_two) == {"client_8", "client_11"}, trust
    # Krum keeps training: accuracy at the end is above where it was when the attacks began
    before_attack = [r["accuracy"] for r in result.rounds if r["end_time"] <= 240][-1]
    assert result.final_accuracy > before_attack
