"""flopynet gns3 image | check: build the FL node image, and list what a GNS3 host needs to carry FL
with this package (each item ok or missing, with how to get it)."""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..credentials import split_credentials
from ..network import node_image, runc_capfix
from ..network.gns3 import DEFAULT_URL, SERVER_VERSION
from . import EXIT_FAILED, EXIT_OK
# Every capability Docker grants a privileged container (CAP_CHOWN .. CAP_CHECKPOINT_RESTORE, bits 0-40).
DOCKER_CAPS = (1 << 41) - 1
CAPFIX = Path(runc_capfix.__file__)  # the OCI runtime wrapper shipped in the package
SOURCES_HINT = "build it from the GNS3 sources (github.com/GNS3/{name}), see the GNS3 backend in docs/backends.md"


def cmd_image(args) -> int:
    tag, seconds, built = node_image.build(force=args.force, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"{tag} {'built' if built else 'cached'} ({seconds:.1f} s)")
    if args.prune:
        for removed in node_image.remove_stale(tag):
            print(f"removed {removed}")
    return EXIT_OK


def cmd_check(args) -> int:
    results = [
        *(_tool(name) for name in ("ubridge", "dynamips", "vpcs")),
        _busybox(),
        _docker(),
        _privileged(),
        _image(),
        _gns3fy(),
        _server((args.url or DEFAULT_URL).rstrip("/")),
    ]
    for ok, line in results:
        print(("ok: " if ok else "missing: ") + line, flush=True)
    return EXIT_OK if all(ok for ok, _ in results) else EXIT_FAILED


# -- the prerequisites: (ok, what) each ---------------------------------------------------------
def _tool(name: str) -> tuple[bool, str]:
    path = shutil.which(name)
    if path:
        return True, f"{name} ({path})"
    return False, f"{name} on PATH ({SOURCES_HINT.format(name=name)})"


def _busybox() -> tuple[bool, str]:
    """GNS3 copies the host's busybox into each Docker node to set it up, so it must be static."""
    path = shutil.which("busybox")
    if not path:
        return False, "busybox on PATH (Debian: apt-get install busybox-static)"
    if _dynamic(path):
        return False, f"a static busybox ({path} is dynamically linked; Debian: apt-get install busybox-static)"
    return True, f"busybox, static ({path})"


def _dynamic(path: str) -> bool:
    """Whether an ELF file asks for a dynamic loader (a PT_INTERP program header)."""
    try:
        with open(path, "rb") as file:
            head = file.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # not a 64-bit ELF: cannot tell, assume fine
                return False
            order = "<" if head[5] == 1 else ">"
            phoff, = struct.unpack_from(order + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 0x36)
            file.seek(phoff)
            table = file.read(phentsize * phnum)
    except OSError:
        return False
    return any(struct.unpack_from(order + "I", table, i * phentsize)[0] == 3 for i in range(phnum))


def _docker() -> tuple[bool, str]:
    reason = node_image.docker_unavailable()
    if reason:
        return False, f"Docker: {reason}"
    version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                             timeout=node_image.DOCKER_TIMEOUT).stdout.strip()
    return True, f"Docker (CLI and daemon {version})"


def capfix_path() -> Path:
    """The packaged runtime wrapper, made executable when this user owns it (wheels may drop the bit)."""
    mode = CAPFIX.stat().st_mode
    if not mode & stat.S_IXUSR and CAPFIX.stat().st_uid == os.geteuid():
        try:
            CAPFIX.chmod(mode | (mode & 0o444) >> 2)  # x wherever r
        except OSError:
            pass
    return CAPFIX


def _privileged() -> tuple[bool, str]:
    """GNS3 starts Docker nodes with every capability; where the bounding set lacks some, runc fails
    ("unable to apply caps") unless dockerd's default runtime removes them first. With the node image
    here, a privileged container of it is started to see; else dockerd's runtime is judged."""
    with open("/proc/self/status") as status:
        bnd = int(next(line for line in status if line.startswith("CapBnd")).split()[1], 16)
    lacking = DOCKER_CAPS & ~bnd
    names = ", ".join(f"CAP_{name}" for bit, name in enumerate(runc_capfix.CAPS) if lacking >> bit & 1)
    fix = f"start dockerd with a runtime wrapper: dockerd --add-runtime capfix={capfix_path()} --default-runtime capfix"
    tag = node_image.image_tag()
    if not node_image.docker_unavailable() and node_image.image_exists(tag):
        try:
            done = subprocess.run(["docker", "run", "--rm", "--privileged", "--network", "none", tag, "true"],
                                  capture_output=True, text=True, timeout=120)
            error = " ".join((done.stderr or done.stdout).split())[-300:] or f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            done, error = None, "docker run did not end within 120 s"
        if done is not None and done.returncode == 0:
            return True, "privileged containers (one of the FL node image started)"
        return False, f"privileged containers: {error}" + (f" (the bounding set lacks {names}: {fix})" if lacking else "")
    if not lacking:
        return True, "privileged containers (the capability bounding set has all that Docker grants)"
    runtime = _default_runtime()
    if runtime and runtime[0] != "runc":
        return True, (f"privileged containers (the bounding set lacks {names}; dockerd's default runtime "
                      f"{runtime[0]}, {runtime[1]}, is taken to remove them as {capfix_path()} does)")
    return False, (f"privileged containers: this machine's capability bounding set lacks {names}, so GNS3's Docker "
                   f"nodes fail with 'unable to apply caps' ({fix})")


def _default_runtime() -> tuple[str, str] | None:
    """(name, path) of dockerd's default OCI runtime, or None when Docker does not say."""
    try:
        done = subprocess.run(["docker", "info", "--format", "{{json .DefaultRuntime}} {{json .Runtimes}}"],
                              capture_output=True, text=True, timeout=node_image.DOCKER_TIMEOUT)
        name, runtimes = done.stdout.split(" ", 1)
        name = json.loads(name)
        return name, (json.loads(runtimes).get(name) or {}).get("path", name)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def _image() -> tuple[bool, str]:
    tag = node_image.image_tag()
    if node_image.docker_unavailable():
        return False, f"FL node image {tag} (Docker is unavailable, see above)"
    if node_image.image_exists(tag):
        return True, f"FL node image {tag}"
    return False, f"FL node image {tag} (build it: flopynet gns3 image)"


def _gns3fy() -> tuple[bool, str]:
    if importlib.util.find_spec("gns3fy"):
        return True, "gns3fy (the gns3 backend's client)"
    return False, "gns3fy, the gns3 backend's client (pip install 'pytest-flopynet[gns3]')"


def _server(url: str) -> tuple[bool, str]:
    shown, (user, password) = split_credentials(url)
    user = user or os.environ.get("FLOPYNET_GNS3_USER")
    password = password or os.environ.get("FLOPYNET_GNS3_PASSWORD")
    request = urllib.request.Request(f"{shown}/v2/version")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    hint = (f"pip install gns3-server=={SERVER_VERSION} into a virtual environment of its own, e.g. `python -m "
            "pytest_flopynet.network.gns3 --setup-server`, and run its gns3server")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            version = json.load(response).get("version", "?")
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return False, f"gns3-server at {shown} answers but refuses the credentials (FLOPYNET_GNS3_USER, _PASSWORD)"
        return False, f"gns3-server at {shown}: GET /v2/version answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"gns3-server at {shown}: {reason} ({hint})"
    return True, f"gns3-server {version} at {shown}"
