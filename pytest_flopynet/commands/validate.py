"""flopynet validate: every check a run makes before it starts (the file's data, registries, topology)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ..checks import check_buildable, with_build_problems
from ..discovery import CLASS_FILE, load_source
from ..errors import FlopynetError, ScenarioValidationError
from ..model import check
from . import EXIT_OK, EXIT_USAGE, one_line_warning


def cmd_validate(args) -> int:
    status = EXIT_OK
    for path in args.files:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scenarios = load_source(Path(path))
                for scenario in scenarios:  # what a run checks where it is built: registries, topology
                    if Path(path).name == CLASS_FILE:  # a class's config is a Python object: its data too
                        check(scenario.config, str(path))
                    check_buildable(scenario.config, str(path), base_dir=Path(path).parent)
            for w in caught:
                one_line_warning(w.message, w.category, w.filename, w.lineno)
            for scenario in scenarios:
                print(f"{path}: ok ({scenario.config.name}, {len(scenario.config.events)} events)")
        except ScenarioValidationError as exc:  # with what a run's checks find in the file's valid fields
            print(with_build_problems(exc, Path(path).parent), file=sys.stderr)
            status = EXIT_USAGE
        except FlopynetError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_USAGE
    return status
