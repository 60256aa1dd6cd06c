import pytest

from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig

pytest_plugins = ["pytester"]


def tiny(**overrides) -> ScenarioConfig:
    """A scenario that trains in well under a second: logistic regression on digits, 3 clients."""
    fl = dict(model_architecture="logreg", total_rounds=3, clients_per_round=3, local_epochs=1, batch_size=32,
              learning_rate=0.2, dataset="digits", client_data_sizes=[100, 100, 100])
    net = dict(topology_type="star", node_count=4, switch_count=1, link_bandwidth_mbps=10, base_latency_ms=5)
    fl.update(overrides.pop("fl", {}))
    net.update(overrides.pop("net", {}))
    return ScenarioConfig(name=overrides.pop("name", "tiny"), duration_minutes=overrides.pop("duration_minutes", 10),
                          fl_config=FLConfig(**fl), network_config=NetworkConfig(**net), **overrides)


@pytest.fixture
def tiny_config():
    return tiny
