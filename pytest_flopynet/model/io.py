"""Load, validate and save scenarios (YAML or JSON); errors name file, field path and reason."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
import warnings
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import ScenarioValidationError
from .config import EventType, ScenarioConfig
from .gates import GateSyntaxError, parse_gate
from .limits import over_limit
from .parse import field_path, parse, shown
from .schema import dataclass_schema
from .specs import AGGREGATION_RULES, AggregationSpec, EventSpec, Param, client_number, event_spec


class ScenarioWarning(UserWarning):
    """A scenario that loads but says something doubtful (the seed's own files do)."""


def _integer(checker, value) -> bool:  # strict: 2.0 is not an integer (JSON Schema's own check accepts it)
    return isinstance(value, int) and not isinstance(value, bool)


def _number(checker, value) -> bool:  # finite: NaN and infinity are no count, rate or time
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _integer, "number": _number}))


@cache
def _validator() -> jsonschema.Draft202012Validator:
    # the fields' shapes; parameters are checked against their specs, with messages of our own
    return StrictValidator(dataclass_schema(ScenarioConfig))


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
            type(None): "null"}.get(type(value), type(value).__name__)


def _schema_problems(error: jsonschema.ValidationError, prefix: tuple = ()) -> list[tuple[str, str]]:
    path = [*prefix, *error.absolute_path]
    v = error.validator
    if v == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known), key=str)
        return [(field_path([*path, str(k)[:MAX_KEY]]), f"unknown key (known keys: {', '.join(known)})") for k in extra]
    if v == "type":
        expected = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        if isinstance(error.instance, float) and not math.isfinite(error.instance):
            return [(field_path(path), f"expected a finite {expected}, got {error.instance}")]
        return [(field_path(path), f"expected {expected}, got {_type_name(error.instance)} {shown(error.instance)}")]
    if v == "enum":
        allowed = ", ".join(str(x) for x in error.validator_value)
        return [(field_path(path), f"{shown(error.instance)} is not one of: {allowed}")]
    if v == "anyOf":
        # Optional[X]: report against the non-null alternative; X | Y: against the one of the value's type
        subs = [sub for sub in error.context if sub.validator != "type" or sub.validator_value != "null"]
        for sub in [sub for sub in subs if sub.validator != "type" or sub.relative_path] or subs:
            return _schema_problems(sub, prefix)
    if v == "required":
        missing = error.message.split("'")[1]
        return [(field_path([*path, missing]), "required field is missing")]
    return [(field_path(path), error.message if len(error.message) <= 2 * MAX_KEY else
             f"{shown(error.instance)} fails the field's {v} rule ({shown(error.validator_value)})")]


MAX_KEY = 100  # characters of a key named in a field path


def _build(cls: type, data: dict) -> Any:
    """dict -> dataclass, recursively (the data is already schema-valid)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(tp):
            value = _build(tp, value)
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            value = [_build(typing.get_args(tp)[0], v) for v in value]
        kwargs[f.name] = value
    return cls(**kwargs)


def to_dict(config: ScenarioConfig) -> dict[str, Any]:
    """Plain data (str, numbers, lists, dicts) in field order, as written to files."""
    def plain(obj):
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Enum):
            return obj.value
        if isinstance(obj, dict):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        return obj
    return plain(config)


def from_dict(data: Any, source: str = "<scenario>", base_dir: Path | None = None) -> ScenarioConfig:
    """Validate plain data and build the ScenarioConfig; raises ScenarioValidationError."""
    if not isinstance(data, dict):
        raise ScenarioValidationError(source, [("", f"expected a mapping of scenario fields, got {_type_name(data)}")])
    problems, errors = [], list(_validator().iter_errors(data))
    for error in errors:
        problems += _schema_problems(error)
    if not problems:
        config = _build(ScenarioConfig, data)
        check(config, source, base_dir)
        return config
    # every problem in one pass: the rules across fields run too, on the fields that are valid
    try:
        config, bad = _salvage(data, errors)
        extra = [p for p in check_problems(config, source, warn=False, bad=bad) if not covered(bad, p[0])]
    except (KeyError, IndexError, TypeError, ValueError):  # a shape the salvage did not foresee: these suffice
        config, bad, extra = None, frozenset(), []
    exc = ScenarioValidationError(source, sorted(set(problems)) + extra)
    exc.salvaged = (config, bad) if config is not None else None  # for checks.check_buildable
    raise exc


_PLACEHOLDERS = {"name": "scenario", "event_type": "link_failure", "trigger_time": 0.0, "target": "all_links"}
_SECTIONS = {"fl_config", "network_config", "analysis_config", "requirements"}


def covered(bad: frozenset[str], path: str) -> bool:
    """Whether `path` lies in or contains a field with a problem already (its rules cannot judge it)."""
    return any(path == b or path.startswith((b + ".", b + "[")) or b.startswith((path + ".", path + "["))
               for b in bad)


def _salvage(data: dict, errors) -> tuple[ScenarioConfig, frozenset[str]]:
    """The scenario with each field that has a problem set to its default (or a placeholder), and the
    paths of those fields: what the rules across fields may still judge."""
    data, bad = copy.deepcopy(data), set()
    for error in errors:
        parts = list(error.absolute_path)
        if error.validator == "additionalProperties":
            owner = _at(data, parts)
            known = error.schema.get("properties", {})
            for key in [k for k in owner if k not in known]:
                del owner[key]
            continue
        if error.validator == "required":
            parts.append(error.message.split("'")[1])
        depth = 3 if parts[:1] == ["events"] else 2 if parts[:1] and parts[0] in _SECTIONS else 1
        field = parts[:depth]
        bad.add(field_path(field))
        owner, key = _at(data, field[:-1]), field[-1]
        if parts[:1] == ["events"] and len(field) == 2:  # the event itself is not a mapping
            owner[key] = {k: v for k, v in _PLACEHOLDERS.items() if k != "name"}
        elif key in _PLACEHOLDERS:
            owner[key] = _PLACEHOLDERS[key]
        elif isinstance(owner, dict):
            owner.pop(key, None)  # the field's default
        elif isinstance(owner, list):
            owner[key] = ""  # a gate or tag: judged by nothing else
    if not isinstance(data.get("events", []), list):
        data.pop("events")
    return _build(ScenarioConfig, data), frozenset(bad)


def _at(data, parts):
    for part in parts:
        data = data[part]
    return data


def check(config: ScenarioConfig, source: str = "<scenario>", base_dir: Path | None = None, warn: bool = True) -> None:
    """Rules across fields that need only the scenario itself (the schema cannot say them); raises
    ScenarioValidationError. What a scenario names in registries (models, data sets, analyses,
    policies, rules of other packages) and in its topology is checked where a run is built
    (checks.check_buildable). `base_dir` is accepted for symmetry with that check and unused here."""
    if not isinstance(config, ScenarioConfig):
        raise ScenarioValidationError(source, [("", f"expected a ScenarioConfig, got {type(config).__name__}")])
    problems = check_problems(config, source, warn)
    if problems:
        raise ScenarioValidationError(source, problems)


def check_problems(config: ScenarioConfig, source: str = "<scenario>", warn: bool = True,
                   bad: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """check's rules; a rule whose inputs lie in `bad` (fields that already have a problem) is skipped."""
    def known(*paths: str) -> bool:
        return not any(covered(bad, path) for path in paths)
    problems: list[tuple[str, str]] = []
    fl, net = config.fl_config, config.network_config
    n = config.num_clients
    counted = known("fl_config.client_data_sizes", "network_config.node_count")
    if counted and known("fl_config.clients_per_round") and fl.clients_per_round > n:
        problems.append(("fl_config.clients_per_round",
                         f"{fl.clients_per_round} clients per round but the scenario has only {n} clients"))
    if warn and counted and net.node_count < n + 1:
        # attributed to the scenario file, so pytest's warning summary points there
        warnings.warn_explicit(f"network_config.node_count is {net.node_count} but the scenario has {n} clients "
                               f"plus the server ({n + 1} hosts); the topology places all {n + 1}", ScenarioWarning,
                               filename=str(source), lineno=0, module="pytest_flopynet.model.io")
    for name, value, where in [("clients", len(fl.client_data_sizes), "fl_config.client_data_sizes"),
                               ("hosts", net.node_count, "network_config.node_count"),  # clients otherwise
                               ("switches", net.switch_count, "network_config.switch_count"),
                               ("rounds", fl.total_rounds, "fl_config.total_rounds"),
                               ("duration_minutes", config.duration_minutes, "duration_minutes"),
                               ("events", len(config.events), "events")]:
        reason = over_limit(name, value) if known(where) else None
        if reason:
            problems.append((where, reason))
    if known("network_config.topology_type", "network_config.custom_topology_file") and \
            net.topology_type == "custom" and not net.custom_topology_file:
        problems.append(("network_config.custom_topology_file", "required when topology_type is custom"))
    if fl.aggregation_method in AGGREGATION_RULES and known(  # other packages' rules: checked where runs are built
            "fl_config.aggregation_method", "fl_config.aggregation_parameters", "fl_config.clients_per_round"):
        problems += check_aggregation(fl, AGGREGATION_RULES[fl.aggregation_method])
    end = config.duration_seconds
    clients = max(config.num_clients, config.network_config.node_count - 1)
    for i, event in enumerate(config.events):
        where = f"events[{i}]"
        if not known(f"{where}.event_type", f"{where}.target", f"{where}.parameters"):
            continue
        if known("duration_minutes", f"{where}.trigger_time") and event.trigger_time > end:
            problems.append((f"{where}.trigger_time", f"{event.trigger_time:g} s is past the scenario's end "
                                                      f"(duration_minutes {config.duration_minutes:g} = {end:g} s)"))
        spec = event_spec(event.event_type)
        problems += _check_against(f"{where}.parameters", spec.parameters, event.parameters, str(event.event_type))
        problems += _check_target_kind(where, spec, event)
        named = [c for key in ("partitioned_clients", "clients") if isinstance(event.parameters.get(key), list)
                 for c in event.parameters[key]]
        for c in named:  # (their shape was checked with the parameters)
            if counted and isinstance(c, str) and c.startswith("client_") and c[7:].isdigit() and \
                    client_number(c) > clients:
                problems.append((f"{where}.parameters", f"{c!r} is not a client of this scenario (client_1..client_{n})"))
    for i, gate in enumerate(config.gates):
        try:
            if known(f"gates[{i}]"):
                parse_gate(gate)
        except GateSyntaxError as exc:
            problems.append((f"gates[{i}]", str(exc)))
    return problems


def _check_target_kind(where: str, spec: EventSpec, event) -> list[tuple[str, str]]:
    """The target must name the kind of thing the event type acts on."""
    kind, target, params = event.event_type, event.target, event.parameters
    if spec.acts_on == "clients":
        if target == "client_group" and not (params.get("clients") or params.get("partitioned_clients")):
            return [(f"{where}.parameters.clients", f"{kind} on client_group needs the list of clients")]
        if kind == EventType.CLIENT_FAILURE and target == "fl_server":  # the server crashes until recovery_time
            if params.get("failure_type") != "hard_failure":
                return [(f"{where}.parameters.failure_type", "a failure of fl_server is a hard_failure")]
            return []
        if target != "client_group" and not target.startswith("client_"):
            return [(f"{where}.target", f"{kind} acts on clients: client_<n> or client_group (client_failure: also "
                                        f"fl_server), not {target!r}")]
    elif kind == EventType.NETWORK_PARTITION and target == "client_group" and not params.get("partitioned_clients"):
        return [(f"{where}.parameters.partitioned_clients", "a partition of client_group needs partitioned_clients")]
    elif spec.acts_on == "policy":
        if target != "policy_engine":
            return [(f"{where}.target", f"{kind} acts on policy_engine, not {target!r}")]
    elif spec.acts_on == "host" and target in ("all_links", "client_links", "server_links", "client_group",
                                               "policy_engine"):
        return [(f"{where}.target", f"{kind} attacks a host (e.g. fl_server), not {target!r}")]
    elif target == "policy_engine":
        return [(f"{where}.target", f"{kind} does not act on the policy engine")]
    return []


def _check_against(where: str, parameters: dict[str, Param], given: dict, what: str) -> list[tuple[str, str]]:
    problems = []
    for name, p in parameters.items():
        if p.required and name not in given:
            problems.append((f"{where}.{name}", f"required parameter of {what} is missing"))
    for name, value in given.items():
        if name not in parameters:
            known = ", ".join(parameters) or "none"
            problems.append((f"{where}.{name}", f"unknown parameter of {what} (known: {known})"))
            continue
        for error in StrictValidator(parameters[name].schema).iter_errors(value):
            problems += _schema_problems(error, (f"{where}.{name}",))
    return problems


def check_aggregation(fl, spec: AggregationSpec) -> list[tuple[str, str]]:
    """aggregation_parameters against the rule's spec, and its bound on the updates per round."""
    method = fl.aggregation_method
    problems = _check_against("fl_config.aggregation_parameters", spec.parameters, fl.aggregation_parameters, method)
    f = fl.aggregation_parameters.get("f")
    k = fl.clients_per_round
    if not problems and isinstance(f, int) and k < spec.minimum_updates(fl.aggregation_parameters):
        problems.append(("fl_config.aggregation_parameters.f",
                         f"{method} needs {spec.bound} updates per round: n = clients_per_round = {k}, f = {f}"))
    return problems


# ---------------------------------------------------------------------------------- files

def loads(text: str | bytes, source: str = "<scenario>", fmt: str = "yaml",
          base_dir: Path | None = None) -> ScenarioConfig:
    """Parse YAML or JSON text into a validated ScenarioConfig (model.parse bounds what text may do)."""
    return from_dict(parse(text, source, fmt), source, base_dir)


def load_scenario(path: str | Path) -> ScenarioConfig:
    """Read a scenario file (.yaml, .yml or .json)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScenarioValidationError(str(path), [("", f"cannot read the file: {exc.strerror}")]) from None
    fmt = "json" if path.suffix == ".json" else "yaml"
    return loads(data, str(path), fmt, base_dir=path.parent)


def dumps(config: ScenarioConfig, fmt: str = "yaml") -> str:
    data = to_dict(config)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def save_scenario(config: ScenarioConfig, path: str | Path) -> Path:
    """Write a scenario as YAML or JSON (by suffix); load_scenario reads it back equal."""
    path = Path(path)
    check(config, str(path), path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(config, "json" if path.suffix == ".json" else "yaml"), encoding="utf-8")
    return path


def validate(config: ScenarioConfig, source: str = "<python>") -> ScenarioConfig:
    """Validate a ScenarioConfig built in Python exactly as a file would be."""
    return from_dict(to_dict(config), source)

