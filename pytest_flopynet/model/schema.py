"""JSON Schema of the scenario file, derived from the dataclasses' type hints and metadata."""
from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from typing import Any

from .config import ScenarioConfig
from .specs import AGGREGATION_RULES, EVENT_SPECS

_SCALARS = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_type_schema(a) for a in typing.get_args(tp)]
        return {"anyOf": options}
    if tp is type(None):
        return {"type": "null"}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, Enum):
        return {"type": "string"}
    if origin is list:
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": _type_schema(item)}
    if origin is dict:
        return {"type": "object"}
    if dataclasses.is_dataclass(tp):
        return dataclass_schema(tp)
    raise TypeError(f"no schema for {tp!r}")


def dataclass_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name])
        constraints = dict(f.metadata.get("schema", {}))
        if "anyOf" in prop and constraints:
            # constraints apply to the non-null alternative
            for option in prop["anyOf"]:
                if option.get("type") != "null":
                    option.update({k: v for k, v in constraints.items() if k != "enum"})
            if "enum" in constraints:
                prop["enum"] = constraints["enum"]
        else:
            prop.update(constraints)
        if f.metadata.get("doc"):
            prop["description"] = f.metadata["doc"]
        if f.default is not dataclasses.MISSING:
            prop["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if not dataclasses.is_dataclass(value):
                prop["default"] = value
        else:
            required.append(f.name)
        properties[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        schema["description"] = cls.__doc__.strip().splitlines()[0]
    if required:
        schema["required"] = required
    return schema


def _when(field_name: str, value: str, inner: str, parameters) -> dict[str, Any]:
    """`if field_name == value then inner's properties are these parameters` (with their defaults)."""
    props = {name: p.published() for name, p in parameters.items()}
    required = [name for name, p in parameters.items() if p.required]
    then: dict[str, Any] = {"properties": props, "additionalProperties": False}
    if required:
        then["required"] = required
    return {"if": {"properties": {field_name: {"const": value}}, "required": [field_name]},
            "then": {"properties": {inner: then}}}


def scenario_schema() -> dict[str, Any]:
    """The published JSON Schema of a scenario file (`flopynet schema`): the dataclasses' fields, and
    each event type's and aggregation rule's parameters with their defaults (model.specs)."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://pytest-flopynet/scenario.schema.json",
        "title": "pytest-flopynet scenario",
        **dataclass_schema(ScenarioConfig),
    }
    props = schema["properties"]
    props["events"]["items"]["allOf"] = [_when("event_type", str(t), "parameters", spec.parameters)
                                         for t, spec in EVENT_SPECS.items()]
    props["fl_config"]["allOf"] = [_when("aggregation_method", name, "aggregation_parameters", spec.parameters)
                                   for name, spec in AGGREGATION_RULES.items()]
    return schema
