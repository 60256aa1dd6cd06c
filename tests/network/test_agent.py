"""The netns backend's transfer agent, on loopback: its connections use the congestion control it is given."""
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest


def test_the_agents_connections_use_the_congestion_control_it_is_given():
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read a socket's congestion control")
    agent = subprocess.Popen([sys.executable, "-m", "pytest_flopynet.network.agent", "--address", "127.0.0.1",
                              "--ports", "0,0", "--congestion-control", "reno"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(agent.stdout.readline())
        port = ready["ports"][0]
        with socket.create_connection(("127.0.0.1", port)) as client:
            deadline, out = time.monotonic() + 5, ""
            while "reno" not in out and time.monotonic() < deadline:
                out = subprocess.run(["ss", "-tin", "state", "established", f"( sport = :{port} )"],
                                     capture_output=True, text=True).stdout
            assert "reno" in out, out  # the agent's side (sport); this machine's default is bbr or cubic
    finally:
        agent.stdin.close()
        agent.wait(timeout=10)
