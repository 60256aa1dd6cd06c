"""A real Ryu 4.34 controller process for the netns lab.

Ryu lives in a virtual environment of its own (made by `python -m pytest_flopynet.controller.ryu_controller
--setup`, which .ci/run calls): Ryu 4.34 installs on Python 3.11 only with setuptools<=67 and no
build isolation, and needs eventlet 0.33.3 and dnspython<2.3, pins that would clash with the
plugin's environment. The process runs the project's app (ryu_app.py) through its own launcher.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UnavailableError
from ..processes import free_port, stop_group, tool

RYU_PINS = ["ryu==4.34", "eventlet==0.33.3", "dnspython>=2,<2.3", "networkx>=3,<4"]
APP = Path(__file__).with_name("ryu_app.py")


def venv_dir() -> Path:
    """$FLOPYNET_RYU_VENV, else ~/.cache/pytest-flopynet/ryu-4.34."""
    return Path(os.environ.get("FLOPYNET_RYU_VENV") or Path.home() / ".cache" / "pytest-flopynet" / "ryu-4.34")


def ryu_python() -> Path:
    python = venv_dir() / "bin" / "python"
    if not python.exists() or not any(venv_dir().glob("lib/python*/site-packages/networkx")):
        raise UnavailableError(f"Ryu's environment is missing or incomplete ({venv_dir()}): create it with "
                               f"`python -m pytest_flopynet.controller.ryu_controller --setup`")
    return python


def setup() -> Path:
    """Make Ryu's virtual environment (a minute, from PyPI)."""
    folder = venv_dir()
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "setuptools<=67", "wheel"], check=True)
    subprocess.run([*pip, "--no-build-isolation", *RYU_PINS], check=True)
    return folder


class RyuController:
    """`start()` runs Ryu with the flopynet app on 127.0.0.1:port for the lab described by the
    topology file (NetnsLab.write_plan); `stop()` ends it. `log` keeps what the app printed.
    `netns` runs it inside that network namespace, the lab's switch namespace, whose 127.0.0.1 the
    bridges reach."""

    def __init__(self, topology: Path, port: int | None = None, netns: str | None = None):
        self.host, self.port = "127.0.0.1", port or free_port()
        self.topology = Path(topology)
        self.netns = netns
        self.process: subprocess.Popen | None = None
        self.log = Path(topology).with_suffix(".ryu.log")

    def _inside(self, argv: list[str]) -> list[str]:
        return [tool("ip"), "netns", "exec", self.netns, *argv] if self.netns else argv

    def _listening(self) -> bool:
        """A connection from where the bridges connect (inside netns, when given)."""
        probe = f"import socket; socket.create_connection(({self.host!r}, {self.port}), timeout=0.5)"
        return subprocess.run(self._inside([sys.executable, "-c", probe]), capture_output=True).returncode == 0

    def start(self, timeout: float = 30.0) -> RyuController:
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(self._inside([str(ryu_python()), str(APP), "--host", self.host,
                                                          "--port", str(self.port), "--topology", str(self.topology)]),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Ryu exited ({self.process.returncode}): {self.log.read_text()[-1000:]}")
            if self._listening():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Ryu did not listen on {self.host}:{self.port} within {timeout:g} s")

    @property
    def target(self) -> str:
        return f"tcp:{self.host}:{self.port}"

    def stop(self) -> None:
        stop_group(self.process, timeout=5)
        self.process = None

    def __enter__(self) -> RyuController:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["--setup"]:
        print(f"Ryu environment: {setup()}")
    else:
        print("usage: python -m pytest_flopynet.controller.ryu_controller --setup", file=sys.stderr)
        sys.exit(2)
