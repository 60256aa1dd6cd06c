"""Scenario text -> plain data, bounded: whatever bytes a file holds, parsing ends quickly in data or
in one ScenarioValidationError naming the file, the place and the reason.

YAML is read with PyYAML's safe loader, extended to refuse duplicate keys, to bound the document's
nesting and the size it expands to through aliases (a few hundred bytes of nested aliases can stand
for billions of values), and to refuse aliases that contain themselves. JSON is held to the same
rules (duplicate keys, NaN and Infinity refused). Keys must be strings everywhere.
"""
from __future__ import annotations

import json
from typing import Any

import yaml

from ..errors import ScenarioValidationError

MAX_DEPTH = 32  # a scenario nests 5 deep; more is a mistake or an attack
MAX_VALUES = 200_000  # values in the document with every alias expanded (the seed's largest has ~300)
MAX_SHOWN = 200  # characters of a value quoted in a message


def field_path(parts) -> str:
    """fl_config.client_data_sizes[3]: the path of a value in a scenario, as messages name it."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def shown(value: Any) -> str:
    """repr(value), cut to MAX_SHOWN characters: a message never carries a huge value."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"... ({len(text)} characters)"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: fast on large files
    """The safe loader, refusing duplicate keys (the last one would silently win)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML's own error says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown(key)}",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _measure(root: yaml.Node) -> tuple[int, int] | None:
    """(depth, values with aliases expanded) of a composed document, without expanding anything (an
    alias is the same node object, so each node is measured once); None if an alias contains itself."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = ([v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if not children_done:
            if id(node) in size:
                continue
            open_.add(id(node))
            stack.append((node, True))
            for child in children:
                if id(child) in open_:
                    return None
                if id(child) not in size:
                    stack.append((child, False))
            continue
        open_.discard(id(node))
        size[id(node)] = min(1 + sum(size[id(c)] for c in children), 10 * MAX_VALUES)
        depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
    return depth[id(root)], size[id(root)]


def _problem(source: str, where: str, reason: str) -> ScenarioValidationError:
    return ScenarioValidationError(source, [(where, reason)])


def _yaml(text: str, source: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        measured = _measure(node)
        if measured is None:
            raise _problem(source, "", "an alias contains itself (a recursive YAML structure)")
        depth, values = measured
        if depth > MAX_DEPTH:
            raise _problem(source, "", f"nested {depth} levels deep; a scenario needs at most {MAX_DEPTH}")
        if values > MAX_VALUES:
            raise _problem(source, "", f"expands to more than {MAX_VALUES} values (YAML aliases repeat what they "
                                       "name); write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise _problem(source, where, f"invalid YAML: {reason[:MAX_SHOWN]}") from None
    except RecursionError:
        raise _problem(source, "", f"nested too deep to read; a scenario needs at most {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _json(text: str, source: str) -> Any:
    def pairs(items):
        out = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate key {shown(key)}")
            out[key] = value
        return out

    def constant(name):
        raise ValueError(f"{name} is not a number a scenario can use")
    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise _problem(source, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    except ValueError as exc:
        raise _problem(source, "", f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _problem(source, "", f"nested too deep to read; a scenario needs at most {MAX_DEPTH} levels") from None


def parse(text: str | bytes, source: str = "<scenario>", fmt: str = "yaml") -> Any:
    """The plain data of a scenario text (YAML or JSON); raises ScenarioValidationError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _problem(source, "", f"not UTF-8 text: byte 0x{text[exc.start]:02x} at offset {exc.start}") from None
    data = _json(text, source) if fmt == "json" else _yaml(text, source)
    problems = list(_structure_problems(data))
    if problems:
        raise ScenarioValidationError(source, problems)
    return data


def _structure_problems(data: Any):
    """Keys that are not strings, anywhere (iteratively: a JSON document's depth is not measured)."""
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    yield (field_path(path), f"key {shown(key)} is not a string (keys name fields)")
                stack.append((item, (*path, str(key))))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
