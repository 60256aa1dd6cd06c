"""Hypothesis for the plugin's own fuzzed tests, and for nothing else: the settings an `@given` test
that takes the `scenario_runs` fixture runs with, and the profiles a user may pick. The plugin loads
no profile and changes no default, so the project's other Hypothesis tests keep theirs.

A fuzzed scenario test needs no deadline (an example is a whole scenario run) and may use the
function-scoped `scenario_runs` fixture (it shares nothing between examples); it runs 20 examples
(50, derandomized, with CI set) unless `--hypothesis-profile` chose others, and keeps any
`@settings` of its own."""
from __future__ import annotations

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # Hypothesis is in the test extra
    settings = None

if settings is not None:
    ALLOWED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
    COMMON = {"deadline": None, "print_blob": True, "suppress_health_check": ALLOWED}
    # `--hypothesis-profile dev|nightly` picks these for the whole run, on purpose. (No "ci": Hypothesis
    # loads its own profile of that name when CI is set, and the project's tests must keep it.)
    settings.register_profile("dev", max_examples=20, **COMMON)
    settings.register_profile("nightly", max_examples=500, **COMMON)


def scenario_test_settings(profile_chosen: bool):
    """The settings of a fuzzed scenario test: the current defaults (a chosen profile, or the
    project's), without a deadline and with scenario_runs allowed; 20 or 50 examples unless a
    profile was chosen."""
    base = settings.default
    changes = dict(COMMON, suppress_health_check=sorted({*base.suppress_health_check, *ALLOWED}, key=str))
    if not profile_chosen:
        ci = bool(os.environ.get("CI"))
        changes.update(max_examples=50 if ci else 20, derandomize=ci or base.derandomize)
    return settings(base, **changes)


def apply_to_fuzzed_tests(items, profile_chosen: bool) -> None:
    """Give each @given test that takes scenario_runs, and has no @settings of its own, the settings above."""
    if settings is None:
        return
    for item in items:
        test = getattr(item, "obj", None)
        if "scenario_runs" in getattr(item, "fixturenames", ()) and getattr(test, "is_hypothesis_test", False) \
                and not getattr(test, "_hypothesis_internal_settings_applied", False):  # (set by @settings)
            scenario_test_settings(profile_chosen)(test)
