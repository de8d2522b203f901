"""file_sd targets for Dask schedulers (no Prometheus needed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import dask.config
import pytest
from client_helpers import site_file

from daskhpc import discovery


class FakeCluster:
    def __init__(self, port=8787, cluster_id="Scheduler-abc"):
        self.scheduler_info = {"address": "tls://10.0.0.5:40001", "id": cluster_id,
                               "services": {"dashboard": port}}


def test_register_writes_file_sd_target(tmp_path):
    with site_file(tmp_path / "site", {"site": "lab"}):
        path = discovery.register(FakeCluster(), directory=str(tmp_path), user="alice")
    assert path and os.path.dirname(path) == str(tmp_path)
    with open(path, encoding="utf-8") as handle:
        groups = json.load(handle)
    assert groups[0]["targets"] == ["10.0.0.5:8787"]
    labels = groups[0]["labels"]
    assert {k: labels[k] for k in ("job", "user", "cluster_id", "site")} == {
        "job": "dask", "user": "alice", "cluster_id": "Scheduler-abc", "site": "lab"}
    assert labels["__meta_daskhpc_pid"] == str(os.getpid())
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]
    discovery.unregister(FakeCluster())
    assert not os.path.exists(path)
    discovery.unregister(FakeCluster())  # twice is fine


def test_targets_dir_from_the_site_file_only(tmp_path):
    # Was read from Dask config; a policy key now comes from the site file, and a user's setting is ignored.
    targets, elsewhere = tmp_path / "targets", tmp_path / "elsewhere"
    targets.mkdir()
    elsewhere.mkdir()
    with site_file(tmp_path, {"metrics-targets-dir": str(targets)}), \
            dask.config.set({"daskhpc.metrics-targets-dir": str(elsewhere)}):
        path = discovery.register(FakeCluster(cluster_id="Scheduler-cfg"))
    assert os.path.dirname(path) == str(targets) and not os.listdir(elsewhere)
    discovery.unregister(FakeCluster(cluster_id="Scheduler-cfg"))


def test_no_dashboard_or_no_directory_does_not_break_the_cluster(tmp_path):
    assert discovery.register(FakeCluster(port=None), directory=str(tmp_path)) is None
    assert discovery.register(FakeCluster(), directory=str(tmp_path / "missing")) is None


def test_stale_files_of_dead_schedulers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()

    def target(name, pid, on_host=host):
        path = tmp_path / name
        path.write_text(json.dumps([{"targets": ["h:1"], "labels": {
            "__meta_daskhpc_host": on_host, "__meta_daskhpc_pid": str(pid)}}]))
        return path

    stale = target("stale.json", dead_pid)
    alive = target("alive.json", os.getpid())
    elsewhere = target("elsewhere.json", dead_pid, on_host="another-host")
    (tmp_path / "junk.json").write_text("{not json")
    assert discovery.remove_stale(str(tmp_path)) == [str(stale)]
    assert alive.exists() and elsewhere.exists()


def test_scheduler_object_is_accepted():
    class Server:
        port = 8123

    class Scheduler:
        address = "tcp://127.0.0.1:9999"
        id = "Scheduler-xyz"
        http_server = Server()

    assert discovery.scheduler_endpoint(Scheduler()) == ("Scheduler-xyz", "127.0.0.1:8123")


@pytest.mark.parametrize("bad", ["../x", "a/b", "a b"])
def test_file_names_cannot_escape_the_directory(tmp_path, bad):
    path = discovery.target_path(str(tmp_path), bad, user=bad, host="h", pid=1)
    assert os.path.dirname(path) == str(tmp_path)
