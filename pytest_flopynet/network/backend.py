"""The Backend protocol: what the orchestrator asks of any network (simulated, namespaces, GNS3)."""
from __future__ import annotations

import math
from typing import Any, Protocol

from ..netmodel import (Condition, Flow, LinkState, NetworkStats, Topology, check_names,  # noqa: F401 (re-exported)
                        link_states)


class Backend(Protocol):
    name: str

    def unsupported(self, features: frozenset[str]) -> str | None:
        """Why this backend cannot apply conditions with these features here (CONDITION_FEATURES: what
        a scenario's events need, from their EventSpecs), as a skip reason; None if it can."""

    def build(self, topology: Topology) -> None: ...

    def transfer(self, flows: list[Flow], deadline: float = math.inf) -> list[float | None]:
        """Run the flows (and those their on_complete returns) until done or the deadline; the
        completion time of each given flow in scenario seconds, None if it did not finish."""

    def apply(self, condition: Condition) -> Any:
        """Apply a condition now; the handle undoes exactly it."""

    def revert(self, handle: Any) -> None: ...

    def reachable(self, src: str) -> set[str]:
        """The nodes src can reach now (itself included): one graph search for a whole population."""

    def stats(self) -> NetworkStats: ...

    def teardown(self) -> None: ...
