"""What the gns3 backend does inside its Docker nodes from this host: find a container's process, run
the FL node program in the container's namespaces (so the plugin holds its stdin and stdout, as on
netns), and shape an interface with tc in the container's network namespace, which GNS3's link
filters cannot do (they have no rate): HTB on the interface's egress, and on an ifb device that the
interface's ingress is redirected to, so both directions of the link are capped where it ends."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import FlopynetError, UnavailableError

# What a node program inside a container sees of this host's environment: nothing but a clean PATH
# and the thread settings (the image's Python is not this one, and this venv's paths mean nothing there).
PASSED_ON = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS")
PATH = "/opt/flopynet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unavailable() -> str | None:
    """Why FL cannot run in this host's Docker nodes from here, or None."""
    if os.geteuid() != 0:
        return "the gns3 backend enters its Docker nodes' namespaces (nsenter), which needs root"
    for tool in ("docker", "nsenter", "tc", "ip"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}") or os.path.exists(f"/sbin/{tool}")):
            return f"the gns3 backend needs {tool} on this host to reach into its Docker nodes"
    return None


def _run(argv: list[str], what: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FlopynetError(f"{what}: {type(exc).__name__}: {exc}") from None
    if check and done.returncode != 0:
        raise FlopynetError(f"{what}: {' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
    return done


def container_pid(container_id: str) -> int:
    """The host PID of the container's first process; an UnavailableError when it is not running."""
    out = _run(["docker", "inspect", "-f", "{{.State.Pid}}", container_id], f"docker inspect {container_id[:12]}").stdout
    pid = int(out.strip() or 0)
    if pid <= 0:
        raise UnavailableError(f"the Docker container {container_id[:12]} of a GNS3 node is not running")
    return pid


def volume_source(container_id: str, destination: str) -> Path:
    """The host folder behind the container's volume at `destination` (GNS3 keeps it in its project and
    binds it at /gns3volumes<destination>, which the node's init links to `destination`)."""
    out = _run(["docker", "inspect", "-f", "{{range .Mounts}}{{.Destination}}\t{{.Source}}\n{{end}}", container_id],
               f"docker inspect {container_id[:12]}").stdout
    for line in out.splitlines():
        inside, _, source = line.partition("\t")
        if inside in (destination, f"/gns3volumes{destination}") and source:
            return Path(source)
    raise FlopynetError(f"the Docker container {container_id[:12]} of a GNS3 node has no volume at {destination}")


def carry(folder: Path, into: Path) -> None:
    """A copy of `folder` at `into` (a node's volume), its files hard-linked where both are on one file
    system (data sets of hundreds of MB cost nothing per node), else copied; once per node (a restarted
    node keeps it: copying onto a hard link would truncate the original)."""
    if into.exists():
        return

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(folder, into, copy_function=link_or_copy)


def enter(pid: int, argv: list[str]) -> list[str]:
    """argv run inside the container of process `pid`: its file system, network, PID and host name,
    with a clean environment."""
    env = [f"{k}={os.environ[k]}" for k in PASSED_ON if k in os.environ]
    return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--",
            "/usr/bin/env", "-i", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8", *env, *argv]


def net(pid: int, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """One of this host's tools (ip, tc, ping, iperf3) in the container's network namespace only."""
    return _run(["nsenter", "-t", str(pid), "-n", "--", *argv], f"in the network namespace of PID {pid}", check=check)


def shape(pid: int, dev: str, mbps: float) -> None:
    """At most `mbps` each way through `dev` (replaced in place). The bucket holds one frame or a
    millisecond at the rate, whichever is more, as on netns (network/lab.py)."""
    rate = f"{max(mbps, 0.001) * 1000:.0f}kbit"
    burst = f"{max(1600, round(mbps * 1e6 / 8 * 1e-3))}b"
    ifb = "ifb" + dev.removeprefix("eth")
    if net(pid, "ip", "link", "show", ifb, check=False).returncode != 0:
        net(pid, "ip", "link", "add", ifb, "type", "ifb")
        net(pid, "ip", "link", "set", ifb, "up")
        net(pid, "tc", "qdisc", "replace", "dev", dev, "handle", "ffff:", "ingress")
        net(pid, "tc", "filter", "replace", "dev", dev, "parent", "ffff:", "protocol", "all", "u32", "match", "u32",
            "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb)
    for d in (dev, ifb):
        if "htb 1:" not in net(pid, "tc", "qdisc", "show", "dev", d, "root").stdout:  # HTB cannot be "changed"
            net(pid, "tc", "qdisc", "replace", "dev", d, "root", "handle", "1:", "htb", "default", "1")
        net(pid, "tc", "class", "replace", "dev", d, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate,
            "burst", burst, "cburst", burst, "quantum", "1514")


def unshape(pid: int, dev: str) -> None:
    """No rate limit on `dev` any more, either way."""
    ifb = "ifb" + dev.removeprefix("eth")
    net(pid, "tc", "qdisc", "del", "dev", dev, "root", check=False)
    net(pid, "tc", "qdisc", "del", "dev", dev, "ingress", check=False)
    net(pid, "ip", "link", "del", ifb, check=False)


def set_cpus(container_id: str, cpus: float) -> None:
    """The container's CPU limit (docker update --cpus; 0: none)."""
    _run(["docker", "update", "--cpus", f"{cpus:.3f}", container_id], f"limiting the CPU of container {container_id[:12]}")
