"""`flopynet gns3 image` and `flopynet gns3 check`, and the FL node image behind them (network/node_image.py):
its tag follows the package's content, its Python has this interpreter's torch, the check names every
prerequisite of a GNS3 host. Building the image takes about 1.5 minutes (once per package content), so
the tests that need it are slow ones."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version

import pytest
from packaging.utils import canonicalize_name

from pytest_flopynet.errors import FlopynetError, UnavailableError
from pytest_flopynet.network import node_image
from pytest_flopynet.processes import free_port

CHECKED = ("ubridge", "dynamips", "vpcs", "busybox", "Docker", "privileged containers", "FL node image", "gns3fy",
           "gns3-server")


def flopynet(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def lines_of(output: str) -> dict[str, str]:
    """check's lines by the prerequisite each names: {name: "ok" | "missing"}."""
    found = {}
    for line in output.splitlines():
        state, _, what = line.partition(": ")
        name = next((n for n in CHECKED if what.startswith(n) or what.startswith(f"a static {n}")), None)
        if name:
            found[name] = state
    return found


@pytest.fixture(scope="session")
def node_tag():
    """The FL node image of this package's content, built when missing (about 1.5 minutes)."""
    reason = node_image.build_unavailable()
    if reason:
        pytest.skip(reason)
    tag, seconds, built = node_image.build(log=lambda line: print(f"[node image] {line}"))
    print(f"\n[node image] {tag} {'built' if built else 'cached'} in {seconds:.1f} s")
    return tag


# -- the tag and the pins: no Docker needed --------------------------------------------------------
def test_the_tag_is_stable_and_follows_every_package_file(tmp_path, monkeypatch):
    copy = tmp_path / "pytest_flopynet"
    shutil.copytree(node_image.package_folder(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(node_image, "package_folder", lambda: copy)
    tag = node_image.image_tag()
    assert re.fullmatch(r"flopynet-node:[0-9a-f]{12}", tag)
    assert node_image.image_tag() == tag  # stable across calls

    node = copy / "fl" / "node.py"
    original = node.read_bytes()
    node.write_bytes(original + b"\n# changed\n")
    changed = node_image.image_tag()
    assert changed != tag
    node.write_bytes(original)
    assert node_image.image_tag() == tag  # the content, not the modification time

    (copy / "fl" / "extra.py").write_text("")
    assert node_image.image_tag() not in (tag, changed)
    (copy / "fl" / "extra.py").unlink()
    (copy / "fl" / "__pycache__").mkdir(exist_ok=True)
    (copy / "fl" / "__pycache__" / "node.cpython-311.pyc").write_bytes(b"compiled")
    assert node_image.image_tag() == tag  # compiled files do not go into the image
    (copy / "fl" / ".node.py.swp").write_bytes(b"an editor's")
    assert node_image.image_tag() == tag  # nor hidden ones


def test_requirements_pin_this_interpreters_closure():
    pins = node_image.requirements()
    assert f"torch=={version('torch')}" in pins  # the local version too (2.13.0+cpu: the CPU build)
    assert f"numpy=={version('numpy')}" in pins
    names = [canonicalize_name(pin.split("==")[0]) for pin in pins]
    assert {"networkx", "scikit-learn", "pyyaml", "jsonschema"} <= set(names)
    assert "scipy" in names  # scikit-learn's own dependency: the closure, not only the six
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==\S+", pin) for pin in pins)
    assert "pytest" not in names and "matplotlib" not in names  # the nodes do not need them


# -- building: what stops it ------------------------------------------------------------------------
def test_build_without_root_is_unavailable_with_the_reason(monkeypatch):
    monkeypatch.setattr(node_image.os, "geteuid", lambda: 1000)
    with pytest.raises(UnavailableError, match="needs root"):
        node_image.build()


def test_build_without_debootstrap_is_unavailable_with_the_reason(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    which = shutil.which
    monkeypatch.setattr(node_image.shutil, "which", lambda name, *a, **k: None if name == "debootstrap" else which(name))
    with pytest.raises(UnavailableError, match="debootstrap") as info:
        node_image.build()
    assert "\n" not in str(info.value)


def test_a_failing_step_names_itself_and_leaves_no_folder(tmp_path, monkeypatch):
    reason = node_image.build_unavailable()
    if reason:
        pytest.skip(reason)
    port = free_port()  # nothing listens there: debootstrap fails at once
    monkeypatch.setenv("FLOPYNET_DEBIAN_MIRROR", f"http://127.0.0.1:{port}/debian")
    monkeypatch.setattr(node_image.tempfile, "tempdir", str(tmp_path))
    logged = []
    with pytest.raises(FlopynetError) as info:
        node_image.build(force=True, log=logged.append)
    message = str(info.value)
    assert message.startswith("building the FL node image: debootstrap failed (exit ")
    assert f"127.0.0.1:{port}" in message  # the tail of debootstrap's own output
    assert any(f"127.0.0.1:{port}" in line for line in logged)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # the temporary folder went with the failure


# -- the check --------------------------------------------------------------------------------------
def test_check_with_no_server_says_it_is_missing_and_exits_1():
    url = f"http://127.0.0.1:{free_port()}"
    proc = flopynet("gns3", "check", "--url", url, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert set(lines_of(proc.stdout)) == set(CHECKED), proc.stdout  # every prerequisite has its line
    assert all(line.startswith(("ok: ", "missing: ")) for line in proc.stdout.splitlines()), proc.stdout
    server = next(line for line in proc.stdout.splitlines() if f"gns3-server at {url}" in line)
    assert server.startswith("missing: ") and "--setup-server" in server


@pytest.mark.slow
def test_check_is_all_ok_on_a_complete_gns3_host(node_tag):
    from pytest_flopynet.network.gns3 import LocalGNS3Server
    absent = [tool for tool in ("ubridge", "dynamips", "vpcs", "busybox") if not shutil.which(tool)]
    if absent and not os.environ.get("CI"):
        pytest.skip(f"not a complete GNS3 host: {', '.join(absent)} missing (.ci/run builds them)")
    try:
        server = LocalGNS3Server().start()
    except UnavailableError as exc:
        pytest.skip(str(exc))
    try:
        node_image.build()  # cached: the tag again, in case a package file changed since the fixture
        proc = flopynet("gns3", "check", "--url", server.url, timeout=300)
    finally:
        server.stop()
    assert lines_of(proc.stdout) == {name: "ok" for name in CHECKED}, proc.stdout + proc.stderr
    assert proc.returncode == 0
    assert f"ok: gns3-server 2.2.61 at {server.url}" in proc.stdout
    assert "ok: privileged containers (one of the FL node image started)" in proc.stdout


def test_the_packaged_runtime_wrapper_is_executable_and_drops_what_the_bounding_set_lacks(tmp_path, monkeypatch):
    import json

    from pytest_flopynet.commands.gns3 import capfix_path
    from pytest_flopynet.network import runc_capfix
    path = capfix_path()  # what dockerd's --add-runtime gets: an executable script of the system's python3
    assert path.read_text().startswith("#!/usr/bin/env python3\n") and os.access(path, os.X_OK)
    monkeypatch.setattr(runc_capfix, "bounding_set", lambda: ((1 << 41) - 1) & ~(1 << 24))  # no CAP_SYS_RESOURCE
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"process": {"args": ["sh"], "capabilities": {
        "bounding": ["CAP_NET_ADMIN", "CAP_SYS_RESOURCE"], "effective": ["CAP_SYS_RESOURCE"]}}}))
    runc_capfix.strip(str(config), "process")
    assert json.loads(config.read_text())["process"] == {"args": ["sh"], "capabilities": {
        "bounding": ["CAP_NET_ADMIN"], "effective": []}}


# -- the image ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_image_runs_the_node_program_with_this_interpreters_torch(node_tag):
    import torch
    proc = subprocess.run(["docker", "run", "--rm", node_tag, "python", "-c",
                           "import pytest_flopynet.fl.node, torch; print(torch.__version__)"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == torch.__version__
    label = subprocess.run(["docker", "image", "inspect", "--format", "{{index .Config.Labels \"org.flopynet.key\"}}",
                            node_tag], capture_output=True, text=True).stdout.strip()
    assert label.startswith(node_tag.split(":")[1]) and len(label) == 64


@pytest.mark.slow
def test_image_command_reuses_a_built_image(node_tag):
    node_image.build()  # the current tag, in case a package file changed since the fixture
    proc = flopynet("gns3", "image", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(rf"{re.escape(node_image.image_tag())} cached \(\d+\.\d s\)\n", proc.stdout)


@pytest.mark.slow
def test_remove_stale_removes_only_the_other_tags(node_tag, monkeypatch):
    repository = f"flopynet-node-selftest-{os.getpid()}"
    monkeypatch.setattr(node_image, "REPOSITORY", repository)
    tags = [f"{repository}:old", f"{repository}:older", f"{repository}:keep"]
    for tag in tags:
        subprocess.run(["docker", "tag", node_tag, tag], check=True)
    try:
        assert node_image.remove_stale(f"{repository}:keep") == [f"{repository}:old", f"{repository}:older"]
        assert node_image.image_exists(f"{repository}:keep") and node_image.image_exists(node_tag)
        assert not node_image.image_exists(f"{repository}:old")
    finally:
        subprocess.run(["docker", "rmi", *tags], capture_output=True)
