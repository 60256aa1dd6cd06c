"""CPU quotas for the node processes (a resource_constraint's cpu_slowdown_factor made real): a cgroup per
limited process whose CFS quota is 1/factor of one CPU. cgroup v2's cpu.max where the unified hierarchy
has the cpu controller, else cgroup v1's cpu.cfs_quota_us; without either, none (the caller says why)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 10_000  # short periods: a client training for tens of milliseconds is throttled evenly
PREFIX = "flopynet-"


def _hierarchy() -> tuple[Path, str] | None:
    """(the cgroup folder new groups go in, "v2" or "v1"), or None."""
    for unified in (ROOT, ROOT / "unified"):  # pure cgroup v2, or the hybrid layout's v2 mount
        controllers = unified / "cgroup.controllers"
        if controllers.is_file() and "cpu" in controllers.read_text().split():
            return unified, "v2"
    if (ROOT / "cpu" / "cpu.cfs_quota_us").is_file():
        return ROOT / "cpu", "v1"
    return None


def unavailable() -> str | None:
    """Why CPU quotas cannot be set here, or None."""
    found = _hierarchy()
    if found is None:
        return "this kernel mounts no cgroup cpu controller (neither cgroup v2's cpu.max nor v1's cpu.cfs_quota_us)"
    if not os.access(found[0], os.W_OK):
        return f"{found[0]} is not writable by this user (CPU quotas need root)"
    return None


class CpuQuota:
    """A cgroup named `name` whose processes share `1 / factor` of one CPU; remove() moves them back out."""

    def __init__(self, name: str, factor: float):
        self.root, self.version = _hierarchy()
        self.path = self.root / f"{PREFIX}{name}"
        self.path.mkdir(exist_ok=True)
        quota = max(1000, round(PERIOD_US / factor))
        if self.version == "v2":
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            pass  # it ended meanwhile

    def remove(self) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (self.root / "cgroup.procs").write_text(pid)
            except ProcessLookupError:
                pass
        self.path.rmdir()


def leftovers() -> list[Path]:
    """This package's cgroups (for `flopynet cleanup`)."""
    found = _hierarchy()
    return sorted(found[0].glob(f"{PREFIX}*")) if found else []


def cleanup() -> list[str]:
    """Remove this package's cgroups whose processes have all ended (a killed run's); returns what it removed."""
    removed = []
    for path in leftovers():
        if not (path / "cgroup.procs").read_text().split():
            path.rmdir()
            removed.append(f"cgroup {path}")
    return removed
