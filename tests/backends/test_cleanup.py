"""`flopynet cleanup` runs as root and acts on lab records: it trusts none of them. A record it did not
write harms nothing, a PID that now belongs to another process is not signalled, and the state
folder itself must be private."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pytest_flopynet.errors import FlopynetError
from pytest_flopynet.network import lab

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="namespaces need root and iproute2's ip")


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _record(prefix: str, **state) -> Path:
    path = lab.state_dir() / f"{prefix}.json"
    path.write_text(json.dumps(state))
    return path


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


@needs_root
def test_a_forged_record_harms_nothing(sleeper, tmp_path):
    victim = f"victim{os.getpid()}"
    subprocess.run(["ip", "netns", "add", victim], check=True)
    precious = Path(tempfile.mkdtemp(prefix="precious-"))
    record = _record("fnbeef", owner=2**22 + 7, namespaces=[victim], run_dir=str(precious), pids=[sleeper.pid],
                     identities={str(sleeper.pid): lab.identity(sleeper.pid)})
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest_flopynet.cli", "cleanup"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert f"ignoring lab record {record}: namespaces not named fnbeef-" in proc.stderr
        assert victim in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert _alive(sleeper) and precious.is_dir() and record.exists()
    finally:
        subprocess.run(["ip", "netns", "del", victim])
        shutil.rmtree(precious, ignore_errors=True)
        record.unlink(missing_ok=True)


@needs_root
def test_a_recycled_pid_is_left_alone_and_the_recorded_process_is_stopped(sleeper):
    start, command = lab.identity(sleeper.pid)
    run_dir = str(Path(tempfile.gettempdir()) / "flopynet-ovs-fnfeed-gone")
    # the lab's process had this PID once, started at another time: the PID now belongs to someone else
    _record("fnfeed", owner=2**22 + 7, namespaces=[], run_dir=run_dir, pids=[sleeper.pid],
            identities={str(sleeper.pid): [start - 100, command]})
    lab.cleanup()
    assert _alive(sleeper)
    assert not (lab.state_dir() / "fnfeed.json").exists()  # the dead lab's record is done with
    # the same record for the very process: it is stopped
    _record("fnfeed", owner=2**22 + 7, namespaces=[], run_dir=run_dir, pids=[sleeper.pid],
            identities={str(sleeper.pid): [start, command]})
    lab.cleanup()
    assert sleeper.wait(timeout=5) == -signal.SIGTERM


@pytest.mark.parametrize("mode, words", [(0o777, "mode 777, others may write"), (0o755, "mode 755")])
def test_a_state_folder_others_can_write_is_refused(tmp_path, monkeypatch, mode, words):
    folder = tmp_path / "state"
    folder.mkdir()
    folder.chmod(mode)
    monkeypatch.setattr(lab, "STATE_DIR", folder)
    with pytest.raises(FlopynetError, match=words):
        lab.state_dir()


def test_a_state_folder_that_is_a_link_is_refused(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(lab, "STATE_DIR", tmp_path / "state")
    with pytest.raises(FlopynetError, match="not a folder"):
        lab.state_dir()


def test_a_missing_state_folder_is_made_private(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "STATE_DIR", tmp_path / "state")
    assert (lab.state_dir().stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("name, state, words", [
    ("notalab.json", {}, "is not a lab's"),
    ("fn0001.json", {"owner": "x"}, "no owner process"),
    ("fn0001.json", {"owner": 5, "namespaces": ["fn0001-a"], "run_dir": "/home/user"}, "is not one a lab makes"),
    ("fn0001.json", {"owner": 5, "namespaces": ["fn0001-a"], "run_dir": f"{tempfile.gettempdir()}/flopynet-ovs-fn0001-x",
                     "pids": [1]}, "processes without their identities"),
])
def test_records_are_validated(name, state, words):
    assert words in lab.record_problem(Path(name), state)
