"""The PBS lab, live: OpenPBS built from source, its data service, and the roles converging.

Needs the PBS lab (`make test-pbs`); the session fixture brings it up and converges it.
"""

from __future__ import annotations

import json

import pytest
import pbs_helpers
from pbs_helpers import QMGR, QSTAT, job, qsub, wait_for

from conftest import changed_tasks, run_playbook, sh

pytestmark = pytest.mark.lab
jobs = pbs_helpers.jobs  # the fixture (helpers are not a conftest: tests/conftest.py is the one)


def test_server_runs_on_its_data_service(lab):
    """pbs_server answers, which it only does once its PostgreSQL data service is up."""
    status = sh("/opt/pbs/sbin/pbs_dataservice", "status", check=False)
    assert status.returncode == 0 and "running" in status.stdout.lower(), status.stdout + status.stderr
    server = json.loads(sh(QSTAT, "-B", "-f", "-F", "json").stdout)["Server"]
    (attributes,) = server.values()
    # A running server with scheduling on reports "Active", or "Scheduling" while
    # pbs_sched is in a cycle (encode_svrstate in OpenPBS's src/server/svr_func.c).
    # "Idle" would mean scheduling is off, and that is a failure here.
    assert attributes["server_state"] in ("Active", "Scheduling"), attributes["server_state"]


def test_every_compute_host_is_a_free_node_with_the_models_cpus(lab, lab_site):
    nodes = json.loads(sh("/opt/pbs/bin/pbsnodes", "-av", "-F", "json").stdout)["nodes"]
    (group,) = lab_site["node_groups"]
    assert sorted(nodes) == ["pcn1", "pcn2"]
    for name, node in nodes.items():
        assert node["state"] == "free", (name, node["state"])
        assert node["resources_available"]["ncpus"] == group["cpus"], name


def test_second_converge_changes_nothing(lab):
    """pbs_daemons and pbs (pbs_queue, pbs_server, pbs_sched against the live server) are idempotent."""
    run = run_playbook("site.yml", inventory=lab_inventory())
    assert run.rc == 0 and run.failed == 0, run.output[-6000:]
    assert run.changed == 0, "a second converge changed something:\n" + changed_tasks(run.output)


def test_check_mode_reports_drift_and_converge_repairs_it(lab):
    """A queue attribute changed by hand shows up in --check --diff and is put back by the pbs role."""
    sh(QMGR, "-c", "set queue burst kill_delay = 5")
    check = run_playbook("pbs.yml", "--check", "--diff", inventory=lab_inventory())
    assert check.rc == 0 and check.changed == 1, check.output[-4000:]
    assert "kill_delay" in check.output
    assert "kill_delay = 5" in sh(QMGR, "-c", "print queue burst").stdout  # check mode changed nothing
    fix = run_playbook("pbs.yml", inventory=lab_inventory())
    assert fix.rc == 0 and fix.changed == 1, fix.output[-4000:]
    assert "kill_delay = 30" in sh(QMGR, "-c", "print queue burst").stdout


def test_a_job_runs_and_ends(lab, jobs):
    jobs.append(qsub("alice", "burst", 1, seconds=2))
    done = wait_for("alice's burst job to finish", lambda: job(jobs[0])["job_state"] == "F" and job(jobs[0]))
    assert done["Exit_status"] == 0


def lab_inventory():
    from conftest import LAB_INVENTORY
    return LAB_INVENTORY
