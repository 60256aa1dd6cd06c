"""The `flopynet` subcommands, one module per group; cli.py builds the parser and imports only the
module of the command given (so `flopynet schema` does not import torch)."""
from __future__ import annotations

import sys

from ..model import ScenarioWarning

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    where = f"{filename}: " if issubclass(category, ScenarioWarning) else ""  # the scenario file
    print(f"warning: {where}{message}", file=sys.stderr)
