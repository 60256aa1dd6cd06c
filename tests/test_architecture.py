"""The layering docs/architecture.md describes, read from the package's own import statements."""
import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_flopynet"


def _imports() -> nx.DiGraph:
    """part -> part for every relative import between the package's top-level parts (modules and
    sub-packages), at module level and inside functions alike."""
    graph = nx.DiGraph()
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        package = parts if path.name == "__init__.py" else parts[:-1]
        source = parts[1] if len(parts) > 1 else "(root)"
        graph.add_node(source)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                target = base[1] if len(base) > 1 else "(root)"
                if target != source:
                    graph.add_edge(source, target)
    return graph


GRAPH = _imports()


def test_the_model_is_plain_data_that_imports_no_other_part():
    assert set(GRAPH.successors("model")) <= {"errors"}  # errors.py: the exception types every part raises
    assert set(GRAPH.successors("netmodel")) <= {"model"}


def test_the_engine_imports_neither_analysis_report_session_plugin_nor_cli():
    assert not set(GRAPH.successors("engine")) & {"analysis", "report", "session", "checks", "plugin", "fixtures",
                                                 "testrun", "cli", "scenarios", "discovery"}


def test_the_controller_does_not_import_the_network_and_backends_import_no_engine():
    assert "network" not in set(GRAPH.successors("controller"))
    assert "engine" not in set(GRAPH.successors("network"))


def test_no_import_circle_between_parts():
    assert list(nx.simple_cycles(GRAPH)) == []


def _function_level_imports() -> set[tuple[str, str]]:
    """(module, imported module) for every relative import inside a function."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        package = parts if path.name == "__init__.py" else parts[:-1]
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and node.level:
                        base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                        found.add((".".join(parts[1:]), ".".join(base[1:])))
    return found


def test_function_level_imports_are_the_few_that_keep_startup_light():
    assert _function_level_imports() == {
        ("testrun", ""),  # session (torch) when a test first runs a scenario, not at pytest start-up
        ("base_scenario", "session"),  # the same for scenario classes, which discovery loads at collection
        ("report.exports", "report.plots"),  # matplotlib only for a scenario that asks for plots
        ("testrun", "report.plots"),  # and for a test that runs several seeds
        ("fl", "fl.aggregation"),  # `pytest_flopynet.fl.aggregate` without torch at `import pytest_flopynet.fl`
        ("fl.client_conv", "fl.client_conv_triton"),  # Triton: CUDA builds of torch only
    }


def test_the_wheel_lists_every_package_folder():
    """pyproject.toml lists packages by hand (scenarios/ ships as pytest_flopynet.builtin), so a new
    sub-package must be added there or it is missing from the wheel."""
    import tomllib
    tool = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert set(tool["packages"]) == folders | {"pytest_flopynet.builtin"}
    assert tool["package-dir"] == {"pytest_flopynet.builtin": "scenarios"}
