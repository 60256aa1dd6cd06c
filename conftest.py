"""Root conftest: the plugin itself is loaded through its pytest11 entry point; this file only adds the
project's own --run-slow switch for its test suite."""

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the tests marked slow (CI=true does too)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes each (a wheel in a fresh venv, real backends, full runs); "
                                       "run in CI or with --run-slow")


def pytest_collection_modifyitems(config, items):
    """The default suite stays within 15 minutes on 2 cores; CI (CI=true) and --run-slow run every test."""
    if config.getoption("--run-slow") or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI (CI=true) or with --run-slow")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)
