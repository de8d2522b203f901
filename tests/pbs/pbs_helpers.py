"""Helpers of the PBS tier: the PBS lab (inventories/lab-pbs, OpenPBS built from source).

tests/conftest.py reads DASKHPC_LAB_INVENTORY when it is imported, so the variable must be set before
pytest starts: `make test-pbs` does that. Without it these tests would talk to the SLURM lab, so
importing this module refuses.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import LAB_INVENTORY, sh

QSTAT = "/opt/pbs/bin/qstat"
QSUB = "/opt/pbs/bin/qsub"
QDEL = "/opt/pbs/bin/qdel"
QMGR = "/opt/pbs/bin/qmgr"


if LAB_INVENTORY.name != "lab-pbs":
    raise pytest.UsageError("tests/pbs needs DASKHPC_LAB_INVENTORY=inventories/lab-pbs (run `make test-pbs`)")


def qsub(user, queue, ncpus, *args, seconds=600):
    """Submit `sleep` as `user` on the login host; the job id."""
    argv = [QSUB, "-q", queue, "-l", "select=1:ncpus=%d" % ncpus, "-l", "walltime=00:30:00", "-j", "oe",
            "-o", "/dev/null", *args, "--", "/bin/sleep", str(seconds)]
    return sh(*argv, user=user).stdout.strip()


def job(job_id):
    """qstat -f -x -F json of one job (read as root on the server)."""
    out = sh(QSTAT, "-f", "-x", "-F", "json", job_id).stdout
    return json.loads(out)["Jobs"][job_id]


def wait_for(what, check, timeout=180):
    """Poll `check` until it returns something true; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    raise AssertionError("still waiting for %s after %ds (last: %r)" % (what, timeout, value))


@pytest.fixture
def jobs():
    """Job ids a test submits; deleted (with history purge off) when it ends."""
    ids = []
    yield ids
    if ids:
        sh(QDEL, "-W", "force", *ids, check=False)
