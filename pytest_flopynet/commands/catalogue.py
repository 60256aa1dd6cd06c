"""flopynet schema and list: the scenario format, and the scenarios there are."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from ..discovery import discover
from ..errors import FlopynetError
from ..fl import LOCAL_DATASETS
from ..model import family, scenario_schema
from . import EXIT_FAILED, EXIT_OK


def cmd_schema(args) -> int:
    print(json.dumps(scenario_schema(), indent=2))
    return EXIT_OK


def _needs(config) -> str:
    """What a scenario needs beyond the plugin: cores, memory, a local data set."""
    req, needs = config.requirements, []
    if req.min_cpu_cores > 1:
        needs.append(f"{req.min_cpu_cores} cores")
    if req.min_memory_gb > 1:
        needs.append(f"{req.min_memory_gb:g} GiB")
    if config.fl_config.dataset in LOCAL_DATASETS:
        needs.append(f"{config.fl_config.dataset} in --data-dir")
    return ", ".join(needs) or "-"


def cmd_list(args) -> int:
    roots = [Path(p) for p in args.paths] or [p for p in [Path("scenarios")] if p.is_dir()]
    missing = [str(p) for p in roots if not p.is_dir()]
    if missing:
        raise FlopynetError(f"flopynet list: no such folder: {', '.join(missing)}")
    with warnings.catch_warnings():  # a listing is not a validation: `flopynet validate` shows the warnings
        warnings.simplefilter("ignore")
        catalogue = discover(roots)
    rows = [("name", "family", "size", "backend", "needs", "source")]
    for name, scenario in sorted(catalogue.scenarios.items()):
        c = scenario.config
        size = next((t.removesuffix("_size") for t in c.tags if t in ("ci_size", "full_size")), "-")
        source = str(scenario.source) if scenario.source else "entry point"
        rows.append((name, family(c), size, c.backend or "sim", _needs(c), source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(r, widths)) + "  " + r[-1])
    for where, reason in catalogue.errors:
        reason = reason.splitlines()[0].removeprefix(f"{where}: ")
        print(f"{where}: cannot load: {reason}", file=sys.stderr)
    return EXIT_FAILED if catalogue.errors else EXIT_OK
