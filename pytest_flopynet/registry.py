"""Name -> implementation tables that other packages extend: aggregation rules, backends, executors.

A table holds built-in entries as "module:attribute" strings, imported on first use (so listing the
names imports nothing heavy), and adds the entry points of its group: another package declares
`[project.entry-points."pytest_flopynet.backends"] mynet = "mypkg.net:MyNetwork"` and `mynet` is a
backend. `register(name, obj)` adds one at run time (a conftest, a test)."""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Iterator


class Registry:
    def __init__(self, kind: str, group: str, builtin: dict[str, Any]):
        self.kind, self.group = kind, group
        self._entries: dict[str, Any] = dict(builtin)
        self._scanned = False

    def _scan(self) -> None:
        if not self._scanned:
            self._scanned = True
            for ep in entry_points(group=self.group):
                self._entries.setdefault(ep.name, ep.value)

    def register(self, name: str, obj: Any) -> Any:
        self._entries[name] = obj
        return obj

    def load(self, name: str) -> Any:
        """The implementation registered as `name` (KeyError if none)."""
        self._scan()
        obj = self._entries[name]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = obj
        return obj

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._scan()
        return iter(list(self._entries))
