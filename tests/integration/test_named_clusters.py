"""Named clusters on the lab: started by alice, outliving her SSH session, reconnected, listed and stopped.

Every `sh(..., user=...)` call is its own SSH login that ends when the command does, so each step after
`start` runs after the session that started the cluster has hung up. bob, on the same login host, can
neither read alice's record nor connect to her scheduler with his own certificate.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from burst_helpers import PYTHON, USER, squeue
from conftest import sh

pytestmark = pytest.mark.lab

DASKHPC = PYTHON.rsplit("/", 1)[0] + "/daskhpc"
NAME = "it-named"
RECORD = "/home/%s/.daskhpc/clusters/%s.json" % (USER, NAME)

CONNECT = r'''
import sys
from daskhpc import connect
client = connect(sys.argv[1])
client.wait_for_workers(2, timeout=600)
print("SUM", client.submit(sum, range(101)).result(), len(client.scheduler_info()["workers"]))
'''

STRANGER = r'''
import sys
from distributed import Client
from daskhpc.security import cluster_security
try:
    Client(sys.argv[1], security=cluster_security(), timeout=20)
    print("CONNECTED")
except Exception as exc:
    print("REFUSED", type(exc).__name__)
'''


def named_jobs():
    return squeue("--user=" + USER, "--name=dask-" + NAME, "--format=%i").split()


@pytest.fixture()
def named_cluster(lab):
    sh(DASKHPC, "cluster", "stop", NAME, user=USER, check=False, timeout=180)
    yield
    sh(DASKHPC, "cluster", "stop", NAME, user=USER, check=False, timeout=180)
    sh("scancel", "--user=" + USER, "--name=dask-" + NAME, check=False)


def test_a_named_cluster_outlives_the_session_that_started_it(named_cluster):
    started = sh(DASKHPC, "cluster", "start", NAME, "--workers", "2", user=USER, timeout=300)
    assert "connect(%r)" % NAME in started.stdout, started.stdout
    # The session that started it is gone; the cluster and its jobs are not.
    listed = sh(DASKHPC, "cluster", "list", user=USER).stdout
    assert NAME in listed and "running" in listed, listed
    total = sh(PYTHON, "-c", CONNECT, NAME, user=USER, timeout=900).stdout
    # 2 workers asked for: the site's workers-per-job may start them (and more) from one job.
    found = re.search(r"SUM (\d+) (\d+)", total)
    assert found and found.group(1) == "5050" and int(found.group(2)) >= 2, total
    assert named_jobs(), squeue("--user=" + USER)
    # A second connection, from yet another session, sees the same cluster.
    assert "SUM 5050" in sh(PYTHON, "-c", CONNECT, NAME, user=USER, timeout=300).stdout

    stopped = sh(DASKHPC, "cluster", "stop", NAME, user=USER, timeout=180)
    assert "stopped" in stopped.stdout
    deadline = time.monotonic() + 120
    while named_jobs() and time.monotonic() < deadline:
        time.sleep(2)
    assert named_jobs() == [], "stopping left jobs behind"
    assert NAME not in sh(DASKHPC, "cluster", "list", user=USER).stdout


def test_another_user_can_neither_read_nor_join_a_named_cluster(named_cluster):
    sh(DASKHPC, "cluster", "start", NAME, "--workers", "1", user=USER, timeout=300)
    address = json.loads(sh("cat", RECORD, host="login").stdout)["address"]
    # Her record holds the dashboard's token: bob cannot read it, or even list her clusters' directory.
    peek = sh("cat", RECORD, user="bob", check=False)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr, peek
    assert NAME not in sh(DASKHPC, "cluster", "list", user="bob").stdout
    # With the address (ports are no secret), his own certificate still gets him nowhere.
    joined = sh(PYTHON, "-c", STRANGER, address, user="bob", timeout=120).stdout
    assert "REFUSED" in joined and "CONNECTED" not in joined, joined
    # ...and `connect` by her cluster's name finds nothing of his.
    own = sh(PYTHON, "-c", "from daskhpc import connect; connect(%r)" % NAME, user="bob", check=False)
    assert own.returncode != 0 and "no cluster named" in own.stderr, own
