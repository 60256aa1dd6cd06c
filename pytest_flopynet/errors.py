"""Errors a user sees: one clear line each, never a traceback."""
from __future__ import annotations


class FlopynetError(Exception):
    """Base of every error the CLI and the plugin report as a message, not a traceback."""


class ScenarioValidationError(FlopynetError):
    """A scenario file or object that breaks the contract; lists every problem found."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        self.salvaged = None  # (config, fields with problems): what later checks may still judge
        shown = [f"{source}: {path or '(top level)'}: {reason}" for path, reason in problems[:self.SHOWN]]
        if len(problems) > self.SHOWN:
            shown.append(f"{source}: ... and {len(problems) - self.SHOWN} more problems")
        super().__init__("\n".join(shown))

    SHOWN = 20  # problems in the message (all of them stay in .problems)


class UnavailableError(FlopynetError):
    """A capability this machine lacks (data set, backend, resources): tests skip with it."""
