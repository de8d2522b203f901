"""The burst policy on a live OpenPBS server: preemption by requeue, group ACLs, per-user limits.

Needs the PBS lab (`make test-pbs`). The lab's model: prod (express, Priority 160) and burst (normal)
queues over pcn1 and pcn2, 8 CPUs each; burst allows the directory group datasci (alice, bob) only;
alice may run 4 burst cores at once, the whole burst queue 8.
"""

from __future__ import annotations

import json

import pytest
import pbs_helpers
from pbs_helpers import QSUB, job, qsub, wait_for

from conftest import sh

pytestmark = pytest.mark.lab
jobs = pbs_helpers.jobs  # the fixture (helpers are not a conftest: tests/conftest.py is the one)


def state(job_id):
    return job(job_id)["job_state"]


def test_production_preempts_burst_by_requeue(lab, jobs):
    """A production job that needs every core requeues the running burst jobs, then runs."""
    burst = [qsub("alice", "burst", 2), qsub("bob", "burst", 2)]
    jobs.extend(burst)
    wait_for("both burst jobs running", lambda: all(state(j) == "R" for j in burst))
    prod = sh(QSUB, "-q", "prod", "-l", "select=2:ncpus=8", "-l", "place=scatter", "-l", "walltime=00:05:00",
              "-j", "oe", "-o", "/dev/null", "--", "/bin/sleep", "600", user="carol").stdout.strip()
    jobs.append(prod)
    wait_for("the production job running", lambda: state(prod) == "R", timeout=240)
    for burst_id in burst:
        requeued = job(burst_id)
        # Requeued, not deleted or suspended: back in Q, with the run it lost counted.
        assert requeued["job_state"] == "Q", (burst_id, requeued["job_state"])
        assert int(requeued["run_count"]) >= 1, requeued


def test_burst_queue_admits_only_the_directory_group(lab, jobs):
    """acl_groups = datasci is resolved through LDAP on the server: carol (research) and mallory are refused."""
    jobs.append(qsub("alice", "burst", 1, seconds=1))
    for user in ("carol", "mallory"):
        refused = sh(QSUB, "-q", "burst", "-l", "select=1:ncpus=1", "--", "/bin/true", user=user, check=False)
        assert refused.returncode != 0, "%s got into the burst queue: %s" % (user, refused.stdout)
        assert "not allowed" in refused.stderr or "Unauthorized" in refused.stderr, refused.stderr


def test_per_user_core_limit_holds(lab, jobs):
    """alice's 4-core cap: a second 4-core burst job waits while the first runs, with PBS's reason."""
    first = qsub("alice", "burst", 4)
    second = qsub("alice", "burst", 4)
    jobs.extend([first, second])
    wait_for("alice's first burst job running", lambda: state(first) == "R")
    comment = wait_for("the scheduler's comment on the second job", lambda: job(second).get("comment"))
    assert state(second) == "Q"
    assert "limit" in comment.lower() and "ncpus" in comment.lower(), comment
    # Another datasci user still gets in: the cap is per user, not on the queue.
    other = qsub("bob", "burst", 4)
    jobs.append(other)
    wait_for("bob's burst job running beside alice's", lambda: state(other) == "R")


def test_doctor_asks_the_pbs_server_and_names_the_group_to_ask_for(lab):
    """`daskhpc doctor` on the PBS site: its batch checks read the burst queue from the PBS server (never sinfo
    or sacctmgr); alice passes everything, carol (research) is told which group the queue admits."""
    def doctor(user):
        run = sh("/opt/daskhpc/venv/bin/daskhpc", "doctor", "--json", user=user, check=False)
        return run.returncode, {c["name"]: c for c in json.loads(run.stdout)}

    rc, checks = doctor("alice")
    assert rc == 0, [c for c in checks.values() if not c["ok"]]
    assert checks["batch system"]["detail"].startswith("queue burst is enabled and started")
    assert "burst association" not in checks and "admits alice (datasci)" in checks["queue access"]["detail"]
    rc, checks = doctor("carol")
    assert rc == 1 and checks["batch system"]["ok"]
    assert not checks["queue access"]["ok"] and "admits only datasci" in checks["queue access"]["detail"]
    assert "datasci" in checks["queue access"]["fix"]
