"""Find scenarios: scenario folders (scenario.yaml, or scenario.py with a *Scenario class), files named
*.scenario.yaml, the built-in scenarios shipped in the package, and the entry-point group
`pytest_flopynet.scenarios` of other packages.

A scenario that fails to load is reported with its path and reason; the others still load."""
from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from .base_scenario import BaseScenario
from .errors import FlopynetError
from .model import FAMILIES, ScenarioConfig, family, load_scenario  # noqa: F401 (FAMILIES, family re-exported)

SCENARIO_SUFFIXES = (".scenario.yaml", ".scenario.yml", ".scenario.json")
FOLDER_FILES = ("scenario.yaml", "scenario.yml", "scenario.json")
CLASS_FILE = "scenario.py"
ENTRY_POINT_GROUP = "pytest_flopynet.scenarios"


def builtin_folder() -> Path:
    """The built-in scenarios: shipped in the wheel as pytest_flopynet/builtin/ (pyproject.toml maps the
    repository's scenarios/ there), read from scenarios/ itself in a source checkout."""
    here = Path(__file__).resolve().parent
    shipped = here / "builtin"
    return shipped if shipped.is_dir() else here.parent / "scenarios"


def scenario_folders(search: list[Path]) -> list[Path]:
    """Where names are looked up: each search folder's scenarios/, then the built-in scenarios."""
    folders = [d / "scenarios" for d in search if (d / "scenarios").is_dir()] + [builtin_folder()]
    return list({f.resolve(): f for f in folders if f.is_dir()}.values())


def is_scenario_file(path: Path) -> bool:
    return path.name in FOLDER_FILES or path.name.endswith(SCENARIO_SUFFIXES)


def scenario_classes(path: Path) -> list[type]:
    """The classes of a scenario.py whose names end in Scenario and that subclass BaseScenario."""
    module_name = "flopynet_scenario_" + "_".join(path.resolve().parent.parts[1:]).replace(".", "_").replace("-", "_")
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise FlopynetError(f"{path}: cannot import: {type(exc).__name__}: {exc}") from None
    module = sys.modules[module_name]
    found = [c for name, c in vars(module).items() if inspect.isclass(c) and name.endswith("Scenario")
             and issubclass(c, BaseScenario) and c is not BaseScenario and c.__module__ == module_name]
    if not found:
        raise FlopynetError(f"{path}: no class whose name ends in 'Scenario' subclassing BaseScenario")
    return found


def load_source(path: Path) -> list:
    """The scenarios (BaseScenario objects) a file defines: one for a YAML/JSON file, one per class
    for a scenario.py."""
    if path.name == CLASS_FILE:
        return [cls(source=path) for cls in scenario_classes(path)]
    return [BaseScenario.from_file(path)]


def load_config(path: Path):
    """The ScenarioConfig of a scenario file (for a scenario.py, of its first scenario class)."""
    if Path(path).name == CLASS_FILE:
        return load_source(Path(path))[0].config
    return load_scenario(path)


def _from_entry_point(ep) -> list:
    """An entry point names a path (file or folder), a ScenarioConfig, a BaseScenario subclass or
    instance, or a callable returning one of those."""
    try:
        obj = ep.load()
    except Exception as exc:
        raise FlopynetError(f"entry point {ep.name} ({ep.value}): cannot load: {type(exc).__name__}: {exc}") from None
    if inspect.isclass(obj) and issubclass(obj, BaseScenario):
        return [obj()]
    if callable(obj) and not isinstance(obj, BaseScenario):
        obj = obj()
    if isinstance(obj, BaseScenario):
        return [obj]
    if isinstance(obj, ScenarioConfig):
        return [BaseScenario(obj)]
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        files = [path] if path.is_file() else [path / f for f in (*FOLDER_FILES, CLASS_FILE) if (path / f).is_file()]
        if not files:
            raise FlopynetError(f"entry point {ep.name} ({ep.value}): {path} holds no scenario")
        return load_source(files[0])
    raise FlopynetError(f"entry point {ep.name} ({ep.value}): gives a {type(obj).__name__}, not a scenario")


@dataclass
class Catalogue:
    """The scenarios found, by name, and the ones that failed to load with their reasons."""

    scenarios: dict[str, object] = field(default_factory=dict)  # name -> BaseScenario
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path or entry point, reason)

    def add(self, where: str, load) -> None:
        try:
            found = load()
        except FlopynetError as exc:
            self.errors.append((where, str(exc)))
            return
        for scenario in found:
            self.scenarios.setdefault(scenario.config.name, scenario)


def scenario_files(root: Path, unreadable: list[Path]) -> list[Path]:
    """Scenario files under a folder: scenario.yaml/.py in folders, and *.scenario.yaml anywhere
    (a folder's scenario.py counts only when it has no scenario.yaml). Folders that cannot be read
    are skipped and appended to `unreadable`."""
    files: list[Path] = []
    if not root.is_dir():
        return files
    skip = (".", "__")
    for folder, dirs, names in os.walk(root, onerror=lambda e: unreadable.append(Path(e.filename))):
        dirs[:] = sorted(d for d in dirs if not d.startswith(skip) and d not in ("reports", "node_modules"))
        here = Path(folder)
        has_file = any(n in FOLDER_FILES for n in names)
        for name in sorted(names):
            path = here / name
            if is_scenario_file(path) or (name == CLASS_FILE and not has_file):
                files.append(path)
    return files


def discover(roots: list[Path], entry_points_too: bool = True, builtin: bool = True) -> Catalogue:
    """Every scenario under each root's scenarios/ folder (or the root itself when it has none), then
    the built-in scenarios, then those other packages register; the first of a name wins. Files and
    folders that cannot be read are errors with their path; the others still load."""
    catalogue = Catalogue()
    folders = [root / "scenarios" if (root / "scenarios").is_dir() else root for root in roots]
    for folder in dict.fromkeys([f.resolve() for f in folders] + ([builtin_folder()] if builtin else [])):
        unreadable: list[Path] = []
        for path in scenario_files(folder, unreadable):
            catalogue.add(str(path), lambda path=path: load_source(path))
        catalogue.errors += [(str(path), "permission denied: folder not readable") for path in unreadable]
    if entry_points_too:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            catalogue.add(f"entry point {ep.name}", lambda ep=ep: _from_entry_point(ep))
    return catalogue


def resolve_scenario(name_or_path: str | Path, search: list[Path]) -> Path:
    """The scenario file meant by a path (absolute or relative to a search folder) or a name found
    as <folder>/<name>/scenario.yaml or <folder>/<name>.scenario.yaml, or as the name of a scenario
    file anywhere under <folder>, for each folder of scenario_folders(search)."""
    tried: list[Path] = []
    given = Path(name_or_path)
    candidates = [given] if given.is_absolute() else [d / given for d in search]
    name = str(name_or_path)
    folders = scenario_folders(search)
    for d in folders:
        candidates += [d / name / f for f in (*FOLDER_FILES, CLASS_FILE)]
        candidates += [d / f"{name}{s}" for s in SCENARIO_SUFFIXES]
    for c in candidates:
        if c.is_dir():
            candidates += [c / f for f in (*FOLDER_FILES, CLASS_FILE)]
            continue
        if c.is_file():
            return c
        tried.append(c)
    for d in folders if given.name == name else ():  # a CI-size variant beside its full size, by file name
        for path in d.rglob(f"{name}.scenario.*"):
            if is_scenario_file(path):
                return path
    by_name = f" and {name}.scenario.yaml anywhere under them" if given.name == name else ""
    raise FlopynetError(f"no scenario {name!r}: looked for " + ", ".join(dict.fromkeys(str(t) for t in tried))
                        + by_name)


SIZE_ENV = "FLOPYNET_SCENARIO_SIZE"


def sized_name(name_or_path: str | Path, size: str | None = None) -> str | Path:
    """With size "ci" (or FLOPYNET_SCENARIO_SIZE=ci), a built-in name means its CI-size variant:
    basic_fl_training -> basic_fl_training_ci. Paths and other sizes are left alone."""
    size = size or os.environ.get(SIZE_ENV, "full")
    if size not in ("full", "ci"):
        raise FlopynetError(f"scenario size {size!r}: expected full or ci ({SIZE_ENV})")
    text = str(name_or_path)
    if size == "ci" and "/" not in text and "." not in text and not text.endswith("_ci"):
        return f"{text}_ci"
    return name_or_path


def find_scenario(name_or_path: str | Path, search: list[Path], size: str | None = None):
    """The BaseScenario meant by a path or name: a file or folder first, then a scenario of that name
    in the catalogue (scenario classes, other packages' entry points)."""
    name_or_path = sized_name(name_or_path, size)
    try:
        path = resolve_scenario(name_or_path, search)
    except FlopynetError:
        if Path(name_or_path).name != str(name_or_path) or Path(name_or_path).suffix:
            raise  # a path that is not there
        with warnings.catch_warnings():  # only the scenario asked for may warn
            warnings.simplefilter("ignore")
            catalogue = discover(search)
        if str(name_or_path) in catalogue.scenarios:
            return catalogue.scenarios[str(name_or_path)]
        raise
    found = load_source(path)
    return next((s for s in found if s.config.name == str(name_or_path)), found[0])
