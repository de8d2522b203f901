"""The audit report on the PBS lab: playbooks/audit.yml against the live OpenPBS server.

The audit reads the queues, their ACLs and limits with qmgr on the server, what ran from the
server's accounting log, and the directory's groups through the name service. The test first makes
something to find: a burst job of alice's that carol's production job preempts (requeue), then
deleted; the report must show it, and who may use which queue.
"""

from __future__ import annotations

import csv
import json

import pytest
import pbs_helpers
from pbs_helpers import QDEL, QSUB, job, qsub, wait_for

from conftest import run_playbook, sh

pytestmark = pytest.mark.lab
jobs = pbs_helpers.jobs  # the fixture (helpers are not a conftest: tests/conftest.py is the one)


@pytest.fixture(scope="module")
def preempted_job(lab):
    """alice's burst job, requeued once by carol's production job that needs every core, then deleted."""
    burst = qsub("alice", "burst", 1)
    prod = None
    try:
        wait_for("alice's burst job running", lambda: job(burst)["job_state"] == "R")
        prod = sh(QSUB, "-q", "prod", "-l", "select=2:ncpus=8", "-l", "place=scatter", "-l", "walltime=00:05:00",
                  "-j", "oe", "-o", "/dev/null", "--", "/bin/sleep", "5", user="carol").stdout.strip()
        wait_for("alice's job requeued", lambda: int(job(burst).get("run_count", 0)) >= 1
                 and job(burst)["job_state"] == "Q", timeout=240)
    finally:
        sh(QDEL, "-W", "force", *[j for j in (burst, prod) if j], check=False)
    wait_for("both jobs finished", lambda: all(job(j)["job_state"] in ("F", "X") for j in (burst, prod)),
             timeout=240)
    return burst


@pytest.fixture(scope="module")
def reports(preempted_job, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit-reports-pbs")
    run = run_playbook("audit.yml", extra_vars={"daskhpc_audit_reports_dir": str(out)})
    assert run.rc == 0 and run.failed == 0, run.output[-4000:]
    return out


@pytest.fixture(scope="module")
def report(reports):
    with open(reports / "audit-report.json") as handle:
        return json.load(handle)


def test_report_reads_the_pbs_server(report):
    assert report["site"]["scheduler"] == "pbs"
    sources = {s["source"]: s for s in report["sources"]}
    for name in ("pbs_print_server", "pbs_print_sched", "pbs_accounting", "directory"):
        assert sources[name]["status"] == "ok", sources.get(name)
    assert not [s for s in sources if s in ("scontrol_partitions", "sacct", "sacctmgr_qos")]


def test_queues_and_their_policy_are_live(report):
    parts = {p["name"]: p for p in report["partitions"]}
    assert parts["prod"]["in_scheduler"] and parts["burst"]["in_scheduler"]
    # prod is an express queue (nothing preempts it); burst jobs are requeued (preempt_order RD).
    assert parts["prod"]["preempt_mode_scheduler"] == "OFF"
    assert parts["burst"]["preempt_mode_scheduler"] == "RD"
    assert parts["burst"]["allow_groups_scheduler"] == ["datasci"]
    assert parts["burst"]["grace_time_scheduler"] == 30
    qos = {q["name"]: q for q in report["qos"]}
    assert qos["burst"]["max_tres_per_user"] == "cpu=4" == qos["burst"]["model_max_tres_per_user"]
    assert not [f for f in report["findings"] if f["severity"] in ("critical", "high")], report["findings"]


def test_access_review_names_who_each_queue_admits(report, reports):
    burst = {row["user"]: row for row in report["access"] if row["partition"] == "burst"}
    assert burst["alice"]["groups"] == ["datasci"] and burst["alice"]["association"] is True
    assert burst["bob"]["groups"] == ["datasci"]
    # carol (research) and mallory (no group) are not in datasci: the queue's ACL refuses them.
    assert "carol" not in burst and "mallory" not in burst
    prod = {row["user"] for row in report["access"] if row["partition"] == "prod"}
    assert "carol" in prod and "mallory" not in prod
    with open(reports / "csv" / "access.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert ("burst", "alice", "datasci") in {(r["partition"], r["user"], r["groups"]) for r in rows}


def test_usage_shows_alices_preempted_burst_job(report):
    cells = {(r["user"], r["partition"]): r for r in report["usage"]["by_user_partition"]}
    assert ("alice", "burst") in cells, sorted(cells)
    assert cells[("alice", "burst")]["preemptions"] >= 1, cells[("alice", "burst")]
    assert cells[("carol", "prod")]["jobs"] >= 1
    burst = {p["partition"]: p for p in report["usage"]["by_partition"]}["burst"]
    assert burst["class"] == "burst" and burst["preemptions"] >= 1
