"""The audit report on a PBS site: queues and ACLs from qmgr, what ran from the accounting log.

The server's side is written in qmgr's `print server` format from the lab-pbs model's own queue
derivation (so a converged server), then changed where a test plants a problem; the accounting
records follow OpenPBS's src/server/accounting.c (acct_job, account_jobend). tests/pbs/test_pbs_audit.py
checks the same report against the live server.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml

from daskhpc.audit import collect, probe
from daskhpc.audit.render import SCHEMA_PATH
from daskhpc.core.pbs import pbs_queues
from daskhpc.core.site_model import validate
from daskhpc.scheduler import pbs as pbsbatch

REPO = Path(__file__).resolve().parents[2]
UNTIL = datetime(2026, 12, 2)
SINCE = UNTIL - timedelta(days=30)


def lab_model():
    with open(REPO / "inventories" / "lab-pbs" / "group_vars" / "all" / "site.yml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)["daskhpc_site"]


def print_server(model, change=None):
    """`qmgr -c 'print server'` of a server converged to `model`; change(name, attrs) edits a queue first."""
    lines = ["#", "# Create queues and set their attributes.", "#"]
    for queue in pbs_queues(validate(model)):
        attrs = dict(queue["attributes"])
        if change:
            change(queue["name"], attrs)
        lines.append("create queue %s" % queue["name"])
        for key, value in attrs.items():
            values = value if isinstance(value, list) else [value]
            for i, item in enumerate(values):
                text = str(item) if not isinstance(item, bool) else ("True" if item else "False")
                lines.append("set queue %s %s %s %s" % (queue["name"], key, "=" if i == 0 else "+=", text))
    lines.append("set server default_queue = prod")
    return "\n".join(lines) + "\n"


PRINT_SCHED = """create sched default
set sched preempt_queue_prio = 150
set sched preempt_prio = "express_queue, normal_jobs"
set sched preempt_order = RD
set sched preempt_sort = min_time_since_start
"""


def stamp(when):
    return when.strftime("%m/%d/%Y %H:%M:%S")


def record(kind, job_id, when, user, queue, *run):
    start, ncpus, end = (run + (None,))[:3]
    epoch = int(start.timestamp())
    fields = ("user=%s group=g project=_pbs_project_default jobname=dask-worker queue=%s ctime=%d qtime=%d "
              "etime=%d start=%d exec_host=pcn1/0 Resource_List.ncpus=%d Resource_List.select=1:ncpus=%d:mem=2gb"
              % (user, queue, epoch, epoch, epoch, epoch, ncpus, ncpus))
    if end is not None:
        fields += " session=42 end=%d Exit_status=0 resources_used.walltime=00:10:00" % int(end.timestamp())
    return "%s;%s;%s;%s" % (stamp(when), kind, job_id, fields)


def accounting():
    day = UNTIL - timedelta(days=3)
    h = timedelta(hours=1)
    return "\n".join([
        # alice's burst job: started, requeued by a production job after 1 h, ran again 2 h, ended
        record("S", "10.pbs", day, "alice", "burst", day, 1),
        record("R", "10.pbs", day + h, "alice", "burst", day, 1, day + h),
        record("S", "10.pbs", day + h, "alice", "burst", day + h, 1),
        record("E", "10.pbs", day + 3 * h, "alice", "burst", day + h, 1, day + 3 * h),
        # carol's production job: 8 cores for 1 h
        record("Q", "11.pbs", day + h, "carol", "prod", day + h, 8).replace("start=", "x="),
        record("S", "11.pbs", day + h, "carol", "prod", day + h, 8),
        record("E", "11.pbs", day + 2 * h, "carol", "prod", day + h, 8, day + 2 * h),
        # bob's job still running at the end of the period
        record("S", "12.pbs", UNTIL - h, "bob", "burst", UNTIL - h, 2),
        "a line that is not a record",
    ]) + "\n"


def inputs(server=None, **changes):
    model = lab_model()
    base = {
        "site": model,
        "inventory": {"pbs": ["pbs_server", "controller"], "plogin": ["login"]},
        "hosts": {"pbs": {"unavailable": "test"}, "plogin": {"unavailable": "test"}},
        "scheduler": {"period": {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}, "scheduler": "pbs",
                      "pbs_home": "/var/spool/pbs", "pbs_print_server": server or print_server(model),
                      "pbs_print_sched": PRINT_SCHED, "pbs_accounting": accounting()},
        "directory": {"source": "getent", "groups": {"datasci": ["alice", "bob"], "research": ["carol"]},
                      "users": {"alice": True, "bob": True, "carol": True}},
        "ledger": {"unavailable": "test"},
        "collection_version": "0.1.0",
        "period": {"since": SINCE.isoformat(), "until": UNTIL.isoformat()},
    }
    base.update(changes)
    return base


def by_id(report):
    return {f["id"]: f for f in report["findings"]}


@pytest.fixture(scope="module")
def report():
    return collect(inputs())


def test_report_matches_the_schema(report):
    stamped = dict(report, generated_at="2026-12-02T00:00:00Z")  # render stamps it
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        jsonschema.validate(stamped, json.load(fh), cls=jsonschema.Draft202012Validator)
    assert report["site"]["scheduler"] == "pbs"


def test_queues_read_from_qmgr(report):
    rows = {p["name"]: p for p in report["partitions"]}
    assert set(rows) == {"burst", "prod"}
    burst, prod = rows["burst"], rows["prod"]
    assert burst["in_scheduler"] and burst["allow_groups_scheduler"] == ["datasci"]
    assert burst["priority_tier_scheduler"] == 1 and prod["priority_tier_scheduler"] == 160
    assert prod["preempt_mode_scheduler"] == "OFF" and burst["preempt_mode_scheduler"] == "RD"
    assert burst["grace_time_scheduler"] == 30 and burst["max_time_scheduler"] == "04:00:00"
    assert burst["qos_scheduler"] == "burst"
    qos = {q["name"]: q for q in report["qos"]}
    assert qos["burst"]["max_tres_per_user"] == "cpu=4" and qos["burst"]["grp_tres"] == "cpu=8"
    assert qos["burst"]["max_tres_per_user"] == qos["burst"]["model_max_tres_per_user"]


def test_converged_server_has_no_policy_findings(report):
    rules = {f["rule"] for f in report["findings"]}
    assert not rules & {"preemptable-production", "burst-without-limits", "allow-groups-drift", "qos-drift",
                        "partition-not-in-model", "partition-missing"}, rules


def test_access_is_the_members_of_the_queue_acl(report):
    burst = {a["user"]: a for a in report["access"] if a["partition"] == "burst"}
    prod = {a["user"] for a in report["access"] if a["partition"] == "prod"}
    assert set(burst) == {"alice", "bob"} and burst["alice"]["groups"] == ["datasci"]
    assert burst["alice"]["association"] is True   # the live ACL admits her
    assert "carol" not in burst and prod == {"alice", "bob", "carol"}
    assert report["associations"] == [] and report["access_mismatches"] == []


def test_usage_from_the_accounting_log(report):
    cells = {(r["user"], r["partition"]): r for r in report["usage"]["by_user_partition"]}
    assert cells[("alice", "burst")] == {"user": "alice", "partition": "burst", "jobs": 2, "core_hours": 3.0,
                                         "preemptions": 1}
    assert cells[("carol", "prod")]["core_hours"] == 8.0 and cells[("carol", "prod")]["preemptions"] == 0
    assert cells[("bob", "burst")]["core_hours"] == 2.0   # still running at the end: counted to the end
    sources = {s["source"]: s for s in report["sources"]}
    assert sources["pbs_accounting"]["status"] == "ok"


def test_opened_burst_queue_and_loosened_limit_are_findings():
    def change(name, attrs):
        if name == "burst":
            attrs["acl_group_enable"] = False
            attrs["max_run_res.ncpus"] = ["[o:PBS_ALL=8]", "[u:PBS_GENERIC=8]"]
        if name == "prod":
            attrs["Priority"] = 100  # no longer an express queue
    found = by_id(collect(inputs(server=print_server(lab_model(), change))))
    opened = found["allow-groups-drift:burst"]
    assert opened["severity"] == "high" and "acl_groups in the scheduler: ALL" in opened["detail"]
    assert "pbs.yml" in opened["fix"] and "slurm" not in opened["fix"]
    assert "cpu=8 (model cpu=4)" in found["qos-drift:burst"]["detail"]
    assert found["preemptable-production:prod"]["severity"] == "critical"
    assert "express" in found["preemptable-production:prod"]["fix"]


def test_unread_server_is_a_source_not_a_clean_bill():
    report = collect(inputs(scheduler={"unavailable": "pbs unreachable"}))
    sources = {s["source"]: s["status"] for s in report["sources"]}
    assert sources["pbs_print_server"] == "not available" and sources["pbs_accounting"] == "not available"
    assert not any(p["in_scheduler"] for p in report["partitions"])


def test_probe_reads_the_accounting_days_of_the_period(tmp_path):
    directory = tmp_path / "server_priv" / "accounting"
    directory.mkdir(parents=True)
    day = UNTIL - timedelta(days=1)
    (directory / day.strftime("%Y%m%d")).write_text(
        "%s;E;1.pbs;user=a queue=burst\n%s;E;2.pbs;user=b queue=burst\n"
        % (stamp(day), stamp(UNTIL + timedelta(hours=1))))
    (directory / (day + timedelta(days=1)).strftime("%Y%m%d")).write_text(
        "%s;E;3.pbs;user=c queue=burst\n" % stamp(UNTIL + timedelta(hours=1)))
    text = probe.pbs_accounting(str(tmp_path), SINCE.isoformat(), UNTIL.isoformat())
    assert [r["id"] for r in pbsbatch.accounting_records(text)] == ["1.pbs"]
    assert "unavailable" in probe.pbs_accounting(str(tmp_path / "none"), SINCE.isoformat(), UNTIL.isoformat())
