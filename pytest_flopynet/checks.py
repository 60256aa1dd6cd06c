"""The checks that need more than the scenario itself, run once where a run is built: names a
scenario gives to registries (aggregation rules of other packages, models, data sets, analyses,
policies) and to its topology (event targets). model.check has already checked the data."""
from __future__ import annotations

from pathlib import Path

from .analysis.custom import analysis_problem
from .errors import FlopynetError, ScenarioValidationError
from .fl.aggregation import rule_problem
from .fl.datasets import dataset_problems
from .fl.models import model_problems
from .model import AGGREGATION_RULES, ScenarioConfig, check
from .model import validate as validate_data
from .model.io import check_aggregation, covered
from .model.specs import TARGET_KEYWORDS
from .netmodel import Topology
from .network.topology import build_topology
from .policy import load_policies


def registry_problems(config: ScenarioConfig, bad: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """What the scenario names that no registry has (models, data sets and rules are torch code: this
    module imports torch, so the plugin and the light commands reach it only when a run is built).
    Fields in `bad` have a problem already and are not judged again."""
    def known(*paths: str) -> bool:
        return not any(covered(bad, path) for path in paths)
    fl = config.fl_config
    problems = []
    if known("fl_config.aggregation_method", "fl_config.aggregation_parameters", "fl_config.clients_per_round"):
        problems += rule_problem(fl.aggregation_method)  # known: its spec is in AGGREGATION_RULES now
        if not problems:  # a built-in rule passed model.check already; another package's is checked here
            problems += check_aggregation(fl, AGGREGATION_RULES[fl.aggregation_method])
    if known("fl_config.model_architecture", "fl_config.model_parameters"):
        problems += model_problems(fl.model_architecture, fl.model_parameters)
    if known("fl_config.dataset"):
        problems += dataset_problems(fl.dataset)
    for i, name in enumerate(config.analysis_config.custom_analysis):
        if known("analysis_config.custom_analysis") and analysis_problem(name):
            problems.append((f"analysis_config.custom_analysis[{i}]", analysis_problem(name)))
    policies = None
    for i, event in enumerate(config.events):
        if not known(f"events[{i}]"):
            continue
        if event.event_type == "policy_change" and event.target == "policy_engine":
            policies = policies or load_policies()
            name = event.parameters.get("policy_name")
            if name not in policies:
                problems.append((f"events[{i}].parameters.policy_name",
                                 f"unknown policy {name!r} (known: {', '.join(policies)})"))
    return problems


def target_problems(config: ScenarioConfig, topology: Topology,
                    bad: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Event targets that name neither a keyword, a client nor a link or node of the topology."""
    n = config.num_clients
    clients = max(n, config.network_config.node_count - 1)
    known = {*TARGET_KEYWORDS, *(f"client_{i}" for i in range(1, clients + 1)), *topology.graph.nodes,
             *topology.links}
    return [(f"events[{i}].target", f"unknown target {event.target!r}: not a keyword ({', '.join(TARGET_KEYWORDS)}), "
                                    f"a client of this scenario (client_1..client_{n}) or a link or node of the topology")
            for i, event in enumerate(config.events) if event.target not in known
            and not covered(bad, f"events[{i}].target")]


def check_buildable(config: ScenarioConfig, source: str, topology: Topology | None = None,
                    base_dir: Path | None = None) -> Topology:
    """The scenario's own checks, then registries and targets; the topology (built here unless given),
    so the run that follows builds it no second time. Raises ScenarioValidationError."""
    check(config, source, warn=False)
    if topology is None:
        topology = build_topology(config, base_dir=base_dir)
    problems = registry_problems(config) + target_problems(config, topology)
    if problems:
        raise ScenarioValidationError(source, sorted(dict.fromkeys(problems), key=_order(config)))
    return topology


def with_build_problems(exc: ScenarioValidationError, base_dir: Path | None = None) -> ScenarioValidationError:
    """A file's data problems together with what the checks a run makes find in its valid fields
    (exc.salvaged, see model.io.from_dict): every problem of a file in one report."""
    if exc.salvaged is None:
        return exc
    config, bad = exc.salvaged
    extra = registry_problems(config, bad)
    if not any(covered(bad, path) for path in ("network_config", "fl_config.client_data_sizes")):
        try:
            extra += target_problems(config, build_topology(config, base_dir=base_dir), bad)
        except FlopynetError as topology_problem:  # a custom topology file that cannot be read
            extra.append(("network_config.custom_topology_file", str(topology_problem)))
    known = {path for path, _ in exc.problems}
    extra = [p for p in dict.fromkeys(extra) if p[0] not in known and not covered(bad, p[0])]
    return ScenarioValidationError(exc.source, exc.problems + extra) if extra else exc


def _order(config: ScenarioConfig):
    """Problems in the order of the file: fields before events, events by index."""
    def key(problem: tuple[str, str]):
        path = problem[0]
        if path.startswith("events["):
            return (1, int(path[7:path.index("]")]), path)
        return (0, 0, path)
    return key


def validate(config: ScenarioConfig, source: str = "<python>") -> ScenarioConfig:
    """Validate a ScenarioConfig built in Python exactly as `flopynet validate` checks a file: its data,
    then what it names in registries and its topology."""
    config = validate_data(config, source)
    check_buildable(config, source)
    return config
