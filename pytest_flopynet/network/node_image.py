"""The Docker image of the gns3 backend's FL nodes: Debian with a Python that runs this package's node
program (`python -m pytest_flopynet.fl.node`).

No registry can be reached here, so the image is built locally: `debootstrap` makes a minimal Debian,
the wheels of this interpreter's own torch, numpy, ... (pinned to the installed versions, so the nodes
compute what the host computes) go into a virtual environment in it, this package's files are copied
next to them, and `docker import` turns the folder into an image. The tag is a hash of all of that
(recipe, Debian suite and packages, pinned requirements, package files), so an unchanged package reuses
its image and a changed one gets its own: `image_tag()` needs no Docker.

`flopynet gns3 image` builds it; `flopynet gns3 check` lists what else a GNS3 host needs.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from packaging.requirements import Requirement  # pytest's own dependency
from packaging.utils import canonicalize_name

from ..errors import FlopynetError, UnavailableError

REPOSITORY = "flopynet-node"
VENV = "/opt/flopynet"
PYTHON = f"{VENV}/bin/python"  # the interpreter in the image
PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RECIPE = 1  # raise when build() changes what goes into the image: every tag changes with it
SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv")
DEFAULT_MIRROR = "http://deb.debian.org/debian"  # FLOPYNET_DEBIAN_MIRROR overrides it
# What the node program imports (torch for the models, the rest through the package's own imports);
# their dependencies come along (requirements()).
DISTRIBUTIONS = ("torch", "numpy", "networkx", "scikit-learn", "PyYAML", "jsonschema")
KEY_LABEL = "org.flopynet.key"
DOCKER_TIMEOUT = 10.0  # seconds `docker version` may take before the daemon counts as not answering
STEP_TIMEOUT = 1800.0  # seconds any one build step may take
_TAIL_LINES = 15  # lines of a failed step's output in its error


def package_folder() -> Path:
    """The package whose files go into the image (the installed one: this module's parent's parent)."""
    return Path(__file__).resolve().parents[1]


def package_files(folder: Path | None = None) -> list[Path]:
    """The files that go into the image, relative to the package folder, sorted: every file but
    compiled ones (the image compiles its own) and hidden ones (an editor's swap files), so the tag
    follows exactly what is copied."""
    folder = folder or package_folder()
    return sorted(relative for relative in (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
                  if relative.suffix not in (".pyc", ".pyo") and "__pycache__" not in relative.parts
                  and not any(part.startswith(".") or part.endswith("~") for part in relative.parts))


def requirements() -> list[str]:
    """The pinned closure of DISTRIBUTIONS as installed here ("name==version", sorted): the image gets
    exactly this interpreter's versions (torch's local version too, e.g. 2.13.0+cpu: its CPU build)."""
    pinned: dict[str, str] = {}
    todo = list(DISTRIBUTIONS)
    while todo:
        name = todo.pop()
        key = canonicalize_name(name)
        if key in pinned:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise UnavailableError(f"{name} is not installed here, so the node image cannot pin it") from None
        pinned[key] = f"{dist.metadata['Name']}=={dist.version}"
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [pinned[key] for key in sorted(pinned)]  # by canonical name


def snapshot() -> tuple[str, dict[Path, bytes]]:
    """(sha256 over everything that decides the image's content, the package files' bytes by relative
    path): one reading, so that what a build copies is what its tag says even while files change."""
    digest = hashlib.sha256()
    for part in (f"recipe {RECIPE}", f"suite {SUITE}", "packages " + ",".join(DEBIAN_PACKAGES),
                 f"venv {VENV}", f"path {PATH}", *requirements()):
        digest.update(part.encode() + b"\0")
    folder = package_folder()
    files = {relative: (folder / relative).read_bytes() for relative in package_files(folder)}
    for relative, data in files.items():
        digest.update(relative.as_posix().encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest(), files


def image_key() -> str:
    return snapshot()[0]


def image_tag() -> str:
    """flopynet-node:<first 12 hex digits of image_key()>."""
    return f"{REPOSITORY}:{image_key()[:12]}"


# -- Docker ----------------------------------------------------------------------------------------
def docker_unavailable() -> str | None:
    """Why Docker cannot be used here (no CLI, or a daemon that does not answer), else None."""
    if not shutil.which("docker"):
        return "no docker CLI on PATH (Debian: apt-get install docker.io)"
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              text=True, timeout=DOCKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"the Docker daemon did not answer `docker version` within {DOCKER_TIMEOUT:g} s"
    except OSError as exc:
        return f"docker cannot run: {exc}"
    if done.returncode != 0:
        error = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
        return f"the Docker daemon does not answer `docker version`: {error}"
    return None


def image_exists(tag: str) -> bool:
    try:
        return subprocess.run(["docker", "image", "inspect", tag], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _image_id(tag: str) -> str | None:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True,
                          timeout=60)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def remove_stale(keep: str) -> list[str]:
    """Remove every other tag of REPOSITORY (each rebuilt package leaves a 1.4 GB image behind); the
    tags removed. A tag Docker refuses to remove (a container still uses it) stays and is not listed."""
    done = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", REPOSITORY],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise FlopynetError(f"docker image ls {REPOSITORY}: {(done.stderr or done.stdout).strip()}")
    removed = []
    for tag in sorted(set(done.stdout.split())):
        if tag == keep or tag.endswith(":<none>") or not tag.startswith(f"{REPOSITORY}:"):
            continue
        if subprocess.run(["docker", "rmi", tag], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=120).returncode == 0:
            removed.append(tag)
    return removed


# -- building --------------------------------------------------------------------------------------
def build_unavailable() -> str | None:
    """Why this machine cannot build the image (one line), else None."""
    if os.geteuid() != 0:
        return "building the FL node image needs root (debootstrap and chroot)"
    if not shutil.which("debootstrap"):
        return "building the FL node image needs debootstrap (Debian: apt-get install debootstrap)"
    if not shutil.which("tar"):
        return "building the FL node image needs tar"
    return docker_unavailable()


def build(force: bool = False, log: Callable[[str], object] = print) -> tuple[str, float, bool]:
    """Build the image of image_tag() unless it exists (or with force): (tag, seconds, built?).
    UnavailableError when this machine cannot (not root, no debootstrap or Docker); FlopynetError naming
    the step that failed and the tail of its output. Builds of one machine take turns (a lock file), so
    parallel test workers build it once."""
    t0 = time.perf_counter()
    reason = build_unavailable()
    if reason:
        raise UnavailableError(reason)
    key, files = snapshot()
    tag = f"{REPOSITORY}:{key[:12]}"
    if not force and image_exists(tag):
        return tag, time.perf_counter() - t0, False
    lock_path = Path(tempfile.gettempdir()) / "flopynet-node-image.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building: wait, then find its image
        if not force and image_exists(tag):
            return tag, time.perf_counter() - t0, False
        old = _image_id(tag)
        work = Path(tempfile.mkdtemp(prefix="flopynet-node-"))
        try:
            _build_into(work, tag, key, files, log)
        finally:
            _remove(work, log)
        if old and old != _image_id(tag):  # the replaced image of a forced build, now untagged
            subprocess.run(["docker", "rmi", old], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    seconds = time.perf_counter() - t0
    log(f"{tag}: built in {seconds:.1f} s")
    return tag, seconds, True


def _build_into(work: Path, tag: str, key: str, files: dict[Path, bytes], log: Callable[[str], object]) -> None:
    rootfs, wheels = work / "rootfs", work / "rootfs" / "tmp" / "wheels"
    mirror = os.environ.get("FLOPYNET_DEBIAN_MIRROR") or DEFAULT_MIRROR
    debootstrap = shutil.which("debootstrap")
    # A clean environment in the chroot: this host's PIP_* settings and venv paths mean nothing there.
    chroot_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                  "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}

    def chroot(*argv: str) -> list[str]:
        return ["chroot", str(rootfs), *argv]

    _step("debootstrap", [debootstrap, "--variant=minbase", "--include=" + ",".join(DEBIAN_PACKAGES), SUITE,
                          str(rootfs), mirror], log, f"{tag}: debootstrap {SUITE} from {mirror}")
    version = _step("the image's Python version", chroot("python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"),
                    log, env=chroot_env).strip()
    wheels.mkdir(parents=True)
    pins = requirements()
    _step("pip download", [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                           "--python-version", version, "-d", str(wheels), *pins],
          log, f"{tag}: wheels of {len(pins)} distributions for Python {version}")
    _step("python3 -m venv", chroot("python3", "-m", "venv", VENV), log, env=chroot_env)
    whls = sorted(f"/tmp/wheels/{p.name}" for p in wheels.glob("*.whl"))
    _step("pip install", chroot(f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/wheels", *whls),
          log, f"{tag}: installing {len(whls)} wheels into {VENV}", env=chroot_env)
    shutil.rmtree(wheels)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):  # debootstrap's downloads: 100 MB of nothing
        for path in (rootfs / junk).glob("*"):
            if path.is_file():
                path.unlink()
    site = _step("the image's site-packages", chroot(PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"),
                 log, env=chroot_env).strip()
    target = rootfs / site.lstrip("/") / "pytest_flopynet"
    for relative, data in files.items():  # the bytes the tag was computed from
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_bytes(data)
    _step("import check", chroot(PYTHON, "-c", "import pytest_flopynet.fl.node, torch"), log,
          f"{tag}: {PYTHON} imports the node program", env=chroot_env)
    changes = [f"ENV PATH={PATH}", 'CMD ["sleep", "infinity"]', f"LABEL {KEY_LABEL}={key}"]
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        _step("docker import", ["docker", "import", *(a for c in changes for a in ("--change", c)), "-", tag], log,
              f"{tag}: docker import", stdin=tar.stdout)
    finally:
        tar.stdout.close()
        tar_error = tar.stderr.read().decode(errors="replace")
        tar.wait()
    if tar.returncode != 0:
        raise FlopynetError(f"building {tag}: tar of the root file system failed (exit {tar.returncode}):\n"
                            + _tail(tar_error))


def _step(name: str, argv: list[str], log: Callable[[str], object], message: str | None = None, *,
          env: dict | None = None, stdin=None) -> str:
    """Run one build step in a process group of its own (killed whole on timeout or interrupt); its
    standard output. A failure is a FlopynetError naming the step with the tail of its output."""
    if message:
        log(message)
    t0 = time.perf_counter()
    try:
        process = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    except OSError as exc:
        raise FlopynetError(f"building the FL node image: {name} could not start: {exc}") from None
    try:
        output, _ = process.communicate(timeout=STEP_TIMEOUT)
    except BaseException:  # the timeout, or ^C: nothing of the step may outlive the build
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
            raise FlopynetError(f"building the FL node image: {name} took over {STEP_TIMEOUT:g} s") from None
        raise
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise FlopynetError(f"building the FL node image: {name} failed (exit {process.returncode}):\n" + _tail(text))
    if message:
        log(f"  {name}: {time.perf_counter() - t0:.1f} s")
    return text


def _tail(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join("  " + line for line in lines[-_TAIL_LINES:]) or "  (no output)"


def _mounts_under(folder: Path) -> list[str]:
    """Mount points under `folder` (debootstrap mounts /proc, /sys and, in containers, /dev in its
    target; a killed debootstrap leaves them), deepest first."""
    prefix = str(folder) + "/"
    points = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")  # octal escapes such as \040
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove(work: Path, log: Callable[[str], object]) -> None:
    """Remove the build folder, after unmounting what is mounted in it: removing files through a
    mount of the host's /dev would remove the host's."""
    for point in _mounts_under(work):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = _mounts_under(work)
    if left:
        log(f"warning: {work} kept: {', '.join(left)} could not be unmounted")
        return
    shutil.rmtree(work, ignore_errors=True)
