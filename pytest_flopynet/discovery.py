"""Find a scenario by name or path: a file, a scenario folder, or a built-in under scenarios/."""
from __future__ import annotations

from pathlib import Path

from .errors import FlopynetError

SCENARIO_SUFFIXES = (".scenario.yaml", ".scenario.yml", ".scenario.json")
FOLDER_FILES = ("scenario.yaml", "scenario.yml", "scenario.json")


def is_scenario_file(path: Path) -> bool:
    return path.name in FOLDER_FILES or path.name.endswith(SCENARIO_SUFFIXES)


def resolve_scenario(name_or_path: str | Path, search: list[Path]) -> Path:
    """The scenario file meant by a path (absolute or relative to a search folder) or a name found
    as <folder>/scenarios/<name>/scenario.yaml or <folder>/scenarios/<name>.scenario.yaml."""
    tried: list[Path] = []
    given = Path(name_or_path)
    candidates = [given] if given.is_absolute() else [d / given for d in search]
    name = str(name_or_path)
    for d in search:
        candidates += [d / "scenarios" / name / f for f in FOLDER_FILES]
        candidates += [d / "scenarios" / f"{name}{s}" for s in SCENARIO_SUFFIXES]
    for c in candidates:
        if c.is_dir():
            candidates += [c / f for f in FOLDER_FILES]
            continue
        if c.is_file():
            return c
        tried.append(c)
    raise FlopynetError(f"no scenario {name!r}: looked for " + ", ".join(dict.fromkeys(str(t) for t in tried)))
