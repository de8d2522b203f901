"""Named clusters (daskhpc.named): records, liveness, stop and start failures, with real processes.

The lab test (tests/integration/test_named_clusters.py) runs a named cluster on the real burst partition
across a disconnect; these tests pin the parts that need no scheduler: names, the private record, telling
a running cluster from a stale record or a recycled PID, stopping, and a start that fails.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from client_helpers import wait_for

from daskhpc import named


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def stand_in(name):
    """A live process whose command line names daskhpc.named and the cluster, as the real one's does."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "daskhpc.named", "_serve", name])
    # Until it has exec'd, /proc shows the forking test process's command line instead.
    assert wait_for(lambda: b"daskhpc.named" in Path("/proc/%d/cmdline" % process.pid).read_bytes(), 30)
    return process


@pytest.mark.parametrize("bad", ["", "A", "../etc", "a b", "a/b", "-x", "a" * 33, "x\n", None, 3])
def test_bad_names_are_refused_with_the_rule(bad):
    with pytest.raises(named.NamedClusterError, match="lower-case letters"):
        named.check_name(bad)


def test_the_record_is_private_and_written_whole(home):
    named.write_record("etl", {"name": "etl", "pid": 1, "address": "tls://10.0.0.1:1"})
    path = home / ".daskhpc" / "clusters" / "etl.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["address"] == "tls://10.0.0.1:1"
    assert os.listdir(path.parent) == ["etl.json"]  # no temporary file left behind


def test_an_open_record_directory_is_closed(home):
    (home / ".daskhpc" / "clusters").mkdir(parents=True, mode=0o755)
    os.chmod(home / ".daskhpc" / "clusters", 0o755)
    named.write_record("etl", {"name": "etl"})
    assert stat.S_IMODE((home / ".daskhpc" / "clusters").stat().st_mode) == 0o700


def test_list_tells_running_from_stale_and_from_another_host(home):
    here = socket.gethostname()
    live = stand_in("live")
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    try:
        named.write_record("live", {"name": "live", "pid": live.pid, "host": here, "address": "tls://a:1"})
        named.write_record("gone", {"name": "gone", "pid": finished.pid, "host": here, "address": "tls://a:2"})
        named.write_record("away", {"name": "away", "pid": 1, "host": "login2", "address": "tls://b:3"})
        # Our own PID is alive but is not a named cluster's process: a recycled PID is not taken for one.
        named.write_record("reuse", {"name": "reuse", "pid": os.getpid(), "host": here, "address": "tls://a:4"})
        states = {record["name"]: record["state"] for record in named.clusters()}
    finally:
        live.kill()
    assert states == {"live": "running", "gone": "stale", "away": "on login2", "reuse": "stale"}


def test_stop_ends_the_process_and_clears_the_record(home):
    live = stand_in("etl")
    named.write_record("etl", {"name": "etl", "pid": live.pid, "host": socket.gethostname(), "address": "x"})
    assert named.stop("etl") is True
    assert live.wait(timeout=10) == -15  # SIGTERM, which the real process answers by closing the cluster
    assert named.read_record("etl") is None


def test_stop_clears_a_stale_record_and_refuses_one_on_another_host(home):
    named.write_record("old", {"name": "old", "pid": 2**22 + 7, "host": socket.gethostname(), "address": "x"})
    assert named.stop("old") is False and named.read_record("old") is None
    named.write_record("away", {"name": "away", "pid": 1, "host": "login2", "address": "x"})
    with pytest.raises(named.NamedClusterError, match="runs on login2"):
        named.stop("away")
    assert named.read_record("away") is not None


def test_connect_to_an_unknown_or_stopped_cluster_says_what_to_do(home):
    with pytest.raises(named.NamedClusterError, match="daskhpc cluster list"):
        named.connect("nothing")
    named.write_record("old", {"name": "old", "pid": 2**22 + 7, "host": socket.gethostname(), "address": "x"})
    with pytest.raises(named.NamedClusterError, match="has stopped"):
        named.connect("old")


def test_start_refuses_a_name_that_is_running(home):
    live = stand_in("etl")
    try:
        named.write_record("etl", {"name": "etl", "pid": live.pid, "host": socket.gethostname(), "address": "x"})
        with pytest.raises(named.NamedClusterError, match="already running"):
            named.start("etl", workers=1)
    finally:
        live.kill()


def test_a_start_that_fails_reports_the_cause_from_its_log(home):
    # A real detached process that cannot build its cluster (no such interpreter for the workers, or
    # no site configuration on this machine): the command says so with the log's end, leaves no record.
    run = subprocess.run([sys.executable, "-m", "daskhpc.cli", "cluster", "start", "etl", "--workers", "1",
                          "--python", str(home / "no-such-python")], check=False, capture_output=True, text=True,
                         env=dict(os.environ, HOME=str(home)), timeout=120)
    assert run.returncode == 1
    assert "did not start" in run.stderr and "Fix:" in run.stderr, run.stderr  # the cause, with its fix
    assert str(home / ".daskhpc" / "logs" / "cluster-etl.log") in run.stderr
    assert named.read_record("etl") is None
