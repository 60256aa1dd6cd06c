"""The scenario model: the seed's dataclasses, with its field names as the public contract.

Each field carries its documented default and the JSON Schema constraints used both to
validate files and to publish the schema (`flopynet schema`), so the two cannot drift.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """The 13 event types of the seed; values are the strings used in scenario files."""

    NETWORK_LATENCY_INCREASE = "network_latency_increase"
    NETWORK_PACKET_LOSS = "network_packet_loss"
    NETWORK_BANDWIDTH_LIMIT = "network_bandwidth_limit"
    NETWORK_PARTITION = "network_partition"
    LINK_FAILURE = "link_failure"
    CLIENT_JOIN = "client_join"
    CLIENT_LEAVE = "client_leave"
    CLIENT_FAILURE = "client_failure"
    MODEL_POISONING = "model_poisoning"
    DATA_DRIFT = "data_drift"
    POLICY_CHANGE = "policy_change"
    RESOURCE_CONSTRAINT = "resource_constraint"
    SECURITY_EVENT = "security_event"


class ScenarioState(StrEnum):
    PENDING = "pending"
    INITIALIZING = "initializing"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


BACKENDS = ("sim", "netns", "gns3")


def spec(default: Any = MISSING, doc: str = "", *, factory: Any = MISSING, **schema: Any) -> Any:
    """A dataclass field with its documentation and JSON Schema constraints as metadata."""
    return field(default=default, default_factory=factory, metadata={"doc": doc, "schema": schema})


@dataclass
class FLConfig:
    """What is trained, on which data, and how updates are aggregated."""

    model_type: str = spec("pytorch", "Framework of the model.", enum=["pytorch"])
    model_architecture: str = spec("mlp", "Model registry key: mlp, logreg, cnn, lstm, resnet18, mobilenet_v2, ...", minLength=1)
    model_parameters: dict[str, Any] = spec(doc="Architecture parameters, e.g. hidden_layers, num_classes.", factory=dict)
    total_rounds: int = spec(10, "FL rounds to run (the run also stops at duration_minutes).", minimum=1)
    clients_per_round: int = spec(10, "Clients selected each round among the available ones.", minimum=1)
    local_epochs: int = spec(1, "Passes over its local data a client makes per round.", minimum=1)
    batch_size: int = spec(32, "Local mini-batch size.", minimum=1)
    learning_rate: float = spec(0.01, "Local SGD learning rate.", exclusiveMinimum=0)
    dataset: str = spec("digits", "Data set registry key (digits is bundled with scikit-learn).", minLength=1)
    data_distribution: str = spec("iid", "How data is split over clients.", enum=["iid", "non_iid", "custom"])
    client_data_sizes: list[int] = spec(
        doc="Samples per client; its length is the number of clients. Empty: node_count - 1 clients "
        "sharing the data set equally.", factory=list, items={"type": "integer", "minimum": 1})
    aggregation_method: str = spec("fedavg", "Aggregation rule: fedavg, fedprox, scaffold, krum, ...", minLength=1)
    aggregation_parameters: dict[str, Any] = spec(doc="Parameters of the rule, e.g. {mu: 0.1}, {f: 2}.", factory=dict)
    client_compute_gflops: float = spec(
        20.0, "Extension: a client device's training speed in GFLOP/s; local training takes samples x "
        "local_epochs x 3 x the model's forward FLOPs / this of scenario time.", exclusiveMinimum=0)
    round_timeout_seconds: float | None = spec(
        None, "Extension: the server closes a round this long after it starts; clients not back by then "
        "are stragglers. None: wait until the scenario ends.", exclusiveMinimum=0)


@dataclass
class NetworkConfig:
    """The topology every backend builds, and the SDN controller's settings."""

    topology_type: str = spec("star", "star, mesh, tree or custom (custom_topology_file).", enum=["star", "mesh", "tree", "custom"])
    node_count: int = spec(10, "Hosts: the FL server, the clients, and idle hosts up to this count.", minimum=1)
    switch_count: int = spec(1, "Switches of the topology.", minimum=1)
    link_bandwidth_mbps: float = spec(100, "Capacity of every link, each direction, in Mbit/s.", exclusiveMinimum=0)
    base_latency_ms: float = spec(10, "One-way propagation delay of every link, in ms.", minimum=0)
    gns3_template: str | dict[str, str | None] | None = spec(
        None, "GNS3 settings for the gns3 backend: the template name of the FL nodes, or a mapping of roles (server, "
        "client, host, switch, controller) to template names, plus url and compute_id.", minLength=1,
        propertyNames={"enum": ["server", "client", "host", "switch", "controller", "url", "compute_id"]},
        additionalProperties={"type": ["string", "null"]})
    custom_topology_file: str | None = spec(
        None, "networkx node-link JSON, GraphML or GML file for topology_type custom (relative to the scenario file).")
    controller_type: str = spec("ryu", "SDN controller the real backends start.", enum=["ryu", "onos"])
    qos_enabled: bool = spec(False, "The controller applies QoS.")
    traffic_prioritization: bool = spec(False, "FL flows are served before other traffic on congested links.")
    tcp_congestion_control: str = spec(
        "cubic", "TCP congestion control of every host (Linux's default is cubic): how transfers react to loss and "
        "share a bottleneck.", enum=["cubic", "bbr", "reno"])


@dataclass
class ScenarioEvent:
    """Something that happens at trigger_time (scenario seconds) to target."""

    event_type: EventType = spec(doc="One of the EventType values.", enum=[e.value for e in EventType])
    trigger_time: float = spec(doc="Seconds from scenario start.", minimum=0)
    target: str = spec(doc="all_links, client_links, server_links, client_group, client_<n>, fl_server, "
                       "policy_engine, or a link or node name of the topology.", minLength=1)
    parameters: dict[str, Any] = spec(doc="Parameters of the event type.", factory=dict)
    duration: float | None = spec(None, "Seconds until an end event restores what the event changed.", exclusiveMinimum=0)
    description: str = spec("", "Free text.")

    def __post_init__(self) -> None:
        if isinstance(self.event_type, str) and self.event_type in EventType._value2member_map_:
            self.event_type = EventType(self.event_type)


@dataclass
class AnalysisConfig:
    metrics_to_collect: list[str] = spec(doc="Metrics the analysis reports.", factory=lambda: ["accuracy", "loss"],
                                         items={"type": "string"})
    generate_plots: bool = spec(False, "Write PNG plots beside the results.")
    export_data: bool = spec(True, "Write metrics.csv and metrics.json beside the results.")
    custom_analysis: list[str] = spec(doc="Analyses to run beyond the basic ones.", factory=list,
                                      items={"type": "string"})


@dataclass
class ResourceRequirements:
    min_memory_gb: float = spec(1, "The scenario is skipped on a machine with less memory.", minimum=0)
    min_cpu_cores: int = spec(1, "The scenario is skipped on a machine with fewer cores.", minimum=1)
    estimated_duration_minutes: float | None = spec(None, "Expected wall time, for planning.", minimum=0)


@dataclass
class ScenarioConfig:
    """An FL configuration, a network, and a timed schedule of events."""

    name: str = spec(doc="Scenario name.", minLength=1)
    description: str = spec("", "Free text.")
    version: str = spec("1.0.0", "Version of the scenario.")
    author: str = spec("", "Author.")
    duration_minutes: float = spec(30, "Scenario time after which the run stops, in minutes.", exclusiveMinimum=0)
    fl_config: FLConfig = spec(doc="FL configuration.", factory=FLConfig)
    network_config: NetworkConfig = spec(doc="Network configuration.", factory=NetworkConfig)
    events: list[ScenarioEvent] = spec(doc="Timed events.", factory=list)
    analysis_config: AnalysisConfig = spec(doc="What to analyse and export.", factory=AnalysisConfig)
    requirements: ResourceRequirements = spec(doc="Resources the full run needs.", factory=ResourceRequirements)
    seed: int | None = spec(None, "Extension: fixes the seed of this scenario (overrides the run's seed).", minimum=0)
    tags: list[str] = spec(doc="Extension: become pytest markers.", factory=list,
                           items={"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"})
    gates: list[str] = spec(doc="Extension: 'metric op number' checks, e.g. 'final_accuracy >= 0.85', or over the "
                            "seeds: 'mean(final_accuracy) >= 0.85' (median, min, max, std, ci95_low, ci95_high).",
                            factory=list, items={"type": "string"})
    seeds: int | None = spec(None, "Extension: runs of this scenario under pytest, one per seed (seed, seed + 1, ...); "
                                   "its gates judge them all.", minimum=1)
    backend: str | None = spec(None, "Extension: backend to run on (sim, netns, gns3).", enum=[*BACKENDS, None])

    @property
    def duration_seconds(self) -> float:
        return self.duration_minutes * 60.0

    @property
    def client_names(self) -> list[str]:
        return [f"client_{i}" for i in range(1, self.num_clients + 1)]

    @property
    def num_clients(self) -> int:
        """len(client_data_sizes) when given, else node_count - 1 (DESIGN.md, Counting)."""
        return len(self.fl_config.client_data_sizes) or max(self.network_config.node_count - 1, 1)


FAMILIES = {  # scenario families: each is a pytest marker and a scenario tag
    "basic_fl_training": "the basic FL training scenarios",
    "network_instability": "FL under latency, loss, bandwidth limits and partitions",
    "adversarial_attacks": "FL with Byzantine clients and security policies",
    "custom_edge": "edge FL with intermittent clients",
}


def family(config: ScenarioConfig, default: str = "-") -> str:
    """The scenario's family, from its tags."""
    return next((t for t in config.tags if t in FAMILIES), default)
