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


@pytest.fixture(scope="session")
def tiny_config():
    return tiny


def pytest_sessionfinish(session, exitstatus):
    """In CI, the suite fails if any netns lab left something behind (namespaces, links, nftables
    tables, agent, Ryu or Open vSwitch processes): issue 8's 'nothing left over'. Only in CI,
    where nothing else makes labs on the machine; `flopynet cleanup --check` is the same check."""
    import os
    if not os.environ.get("CI") or hasattr(session.config, "workerinput"):
        return
    from pytest_flopynet.network import gns3
    from pytest_flopynet.network.lab import leftovers, unavailable
    if unavailable():
        return
    found = leftovers() + gns3.leftovers() + _node_containers()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if found:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if reporter is not None:
        reporter.write("\n")
        reporter.write_line("netns and GNS3 leftovers after the suite: " + ("; ".join(found) if found else "none"))


def _node_containers() -> list[str]:
    """Containers of the FL node image (GNS3's Docker nodes) still on this host."""
    import subprocess
    try:
        out = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}} {{.Image}}"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [f"container {line.split()[0]}" for line in out.splitlines() if " flopynet-node" in line]
