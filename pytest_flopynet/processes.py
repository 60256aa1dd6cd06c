"""The helper processes real backends start (Ryu, a local gns3-server): a free loopback port to
give them, and stopping the process group each was started in (start_new_session=True)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path


def tool(name: str) -> str:
    """A system tool's path: on PATH, else in /usr/sbin (root's tools where PATH lacks it)."""
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM to the process's group, SIGKILL if it has not ended within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
