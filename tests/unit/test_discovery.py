"""daskhpc.discovery.register/unregister: the users' side (the service's rules: test_discovery_serve.py)."""

from __future__ import annotations

import json
import os

import dask.config
import pytest
from client_helpers import site_file

from daskhpc import discovery


class FakeCluster:
    def __init__(self, port=8787, cluster_id="Scheduler-abc", host="10.0.0.5"):
        self.scheduler_info = {"address": "tls://%s:40001" % host, "id": cluster_id,
                               "services": {"metrics": port}}


def test_register_writes_the_target_and_the_cluster_id_only(tmp_path):
    with site_file(tmp_path / "site", {"site": "lab"}):
        path = discovery.register(FakeCluster(), directory=str(tmp_path), user="alice")
    assert path and os.path.dirname(path) == str(tmp_path)
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == [{"targets": ["10.0.0.5:8787"], "labels": {"cluster_id": "Scheduler-abc"}}]
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]
    discovery.unregister(FakeCluster())
    assert not os.path.exists(path)
    discovery.unregister(FakeCluster())  # twice is fine


def test_file_names_are_unguessable(tmp_path):
    """Nobody can plant a file, FIFO or symlink under the name a registration will use."""
    names = {discovery.target_path(str(tmp_path), "Scheduler-abc", user="alice", host="h", pid=1) for _i in range(3)}
    assert len(names) == 3


def test_names_become_addresses(tmp_path):
    assert discovery.scheduler_endpoint(FakeCluster(host="localhost"))[1] in ("127.0.0.1:8787", "[::1]:8787")
    assert discovery.scheduler_endpoint(FakeCluster(host="[2001:db8::1]"))[1] == "[2001:db8::1]:8787"


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


def test_scheduler_object_is_accepted_by_its_mutual_tls_metrics_port_only():
    class Server:
        port = 8123

    class Scheduler:
        address = "tcp://127.0.0.1:9999"
        id = "Scheduler-xyz"
        http_server = Server()  # the dashboard: never published

    class OwnerScheduler(Scheduler):
        metrics_server = type("Metrics", (), {"port": 8443})()

    assert discovery.scheduler_endpoint(OwnerScheduler()) == ("Scheduler-xyz", "127.0.0.1:8443")
    with pytest.raises(ValueError, match="no /metrics over mutual TLS"):
        discovery.scheduler_endpoint(Scheduler())


@pytest.mark.parametrize("bad", ["../x", "a/b", "a b"])
def test_file_names_cannot_escape_the_directory(tmp_path, bad):
    path = discovery.target_path(str(tmp_path), bad, user=bad, host="h", pid=1)
    assert os.path.dirname(path) == str(tmp_path)


def test_a_planted_symlink_is_never_written_through(tmp_path, monkeypatch):
    """Even with a guessed temporary name, O_EXCL|O_NOFOLLOW refuses what another user prepared."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    monkeypatch.setattr(discovery.secrets, "token_hex", lambda n: "0" * 2 * n)
    os.symlink(victim, tmp_path / (".tmp-%s.json" % ("0" * 16)))
    assert discovery.register(FakeCluster(), directory=str(tmp_path)) is None
    assert victim.read_text() == "precious"
