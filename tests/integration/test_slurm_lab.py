"""The SLURM lab against its real daemons: partitions, preemption, QOS limits, idempotence, refusal.

slurmctld runs on ctl (root's commands go there), one slurmd on each of cn1, cn2 (compute) and bm1,
bm2 (bigmem); alice submits on the login host, logged in as herself.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import pytest
import yaml

from conftest import REPO, adhoc, changed_tasks, inventory_group, run_playbook, sh, slurm_config

pytestmark = pytest.mark.lab

BURST = ["-p", "burst", "-A", "burst", "-q", "burst", "--requeue", "--chdir=/tmp", "--output=/dev/null"]


def partitions():
    out = sh("scontrol", "show", "partition", "--oneliner").stdout
    parts = {}
    for line in out.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        parts[fields["PartitionName"]] = fields
    return parts


def job(job_id):
    out = sh("scontrol", "show", "job", "--oneliner", str(job_id)).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def slurm_time(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")


def test_sinfo_shows_the_three_partitions(lab):
    out = sh("sinfo", "--noheader", "--format=%R|%a|%D").stdout.split()
    names = {line.split("|")[0] for line in out}
    assert names == {"prod", "bigmem", "burst"}
    assert all(line.split("|")[1] == "up" for line in out)


def test_partitions_carry_the_isolation_settings(lab, lab_site):
    parts = partitions()
    assert parts["prod"]["Default"] == "YES"
    for name in ("prod", "bigmem"):
        assert parts[name]["PreemptMode"] == "OFF"
        assert parts[name]["DenyAccounts"] == "burst"
        assert parts[name]["DenyQos"] == "burst"
    burst = parts["burst"]
    assert burst["PreemptMode"] == "REQUEUE"
    assert int(burst["PriorityTier"]) < min(int(parts[p]["PriorityTier"]) for p in ("prod", "bigmem"))
    assert burst["AllowGroups"] == "datasci"
    assert burst["QoS"] == "burst"
    assert burst["GraceTime"] == str(lab_site["burst"]["grace_time"])
    assert burst["MaxTime"] == "04:00:00"


def test_burst_qos_limits_are_in_the_scheduler(lab):
    out = sh("sacctmgr", "--parsable2", "--noheader", "show", "qos", "name=burst",
             "format=maxtrespu,maxjobspu,maxsubmitpu,grptres,maxwall,flags").stdout.strip()
    # per user: 16 cores, 32 jobs, 200 submitted; the whole burst: 50% of the 32 cores of cn1, cn2, bm1, bm2
    assert out == "cpu=16|32|200|cpu=16|04:00:00|DenyOnLimit"


def test_production_job_requeues_a_burst_job_holding_its_nodes(lab, lab_site):
    prod_nodes = inventory_group("cpu_nodes")  # cn1, cn2: the nodes of prod
    burst_id = sh("sbatch", "--parsable", *BURST, "-N%d" % len(prod_nodes), "-w", ",".join(prod_nodes),
                  "--ntasks-per-node=8", "--job-name=burst-filler", "--wrap", "sleep 600", user="alice").stdout.strip()
    prod_id = None
    try:
        wait_for(lambda: job(burst_id)["JobState"] == "RUNNING", 180, "the burst job to run")
        # Production needs every node of prod, all of which the burst job holds.
        prod_id = sh("sbatch", "--parsable", "-p", "prod", "-N%d" % len(prod_nodes), "--exclusive",
                     "--job-name=prod-needs-nodes", "--chdir=/tmp", "--output=/dev/null",
                     "--wrap", "sleep 20").stdout.strip()
        grace = lab_site["burst"]["grace_time"]
        state = wait_for(lambda: job(prod_id)["JobState"] in ("RUNNING", "COMPLETED") and job(prod_id),
                         grace + 60, "the production job to start")
        waited = (slurm_time(state["StartTime"]) - slurm_time(state["SubmitTime"])).total_seconds()
        # SLURM's bound: GraceTime, then at most KillWait between SIGTERM and SIGKILL; the burst job
        # would otherwise have held the nodes for its whole 600 s.
        kill_wait = int(slurm_config("KillWait").split()[0])
        assert waited <= grace + kill_wait + 10, "production waited %ss: more than GraceTime %ss + KillWait %ss + 10s" \
            % (waited, grace, kill_wait)
        burst = job(burst_id)
        assert int(burst["Restarts"]) >= 1, burst
        assert burst["JobState"] in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING", "RUNNING"), burst
        history = sh("sacct", "--noheader", "--parsable2", "--duplicates", "-X", "-j", burst_id,
                     "--format=State").stdout.split()
        assert "PREEMPTED" in history or "REQUEUED" in history, history
    finally:
        sh("scancel", burst_id, *([prod_id] if prod_id else []), check=False)


def test_burst_job_above_the_per_user_core_limit_is_refused_with_the_qos_reason(lab):
    proc = sh("sbatch", "--parsable", *BURST, "-n", "17", "--wrap", "sleep 1", user="alice", check=False)
    assert proc.returncode != 0
    assert "QOSMaxCpuPerUserLimit" in proc.stderr


def test_burst_partition_refuses_other_qos(lab):
    proc = sh("sbatch", "--parsable", "-p", "burst", "-A", "burst", "-q", "normal", "--wrap", "sleep 1",
              user="alice", check=False)
    assert proc.returncode != 0
    assert "qos" in proc.stderr.lower()


def test_burst_account_cannot_run_in_production(lab):
    proc = sh("sbatch", "--parsable", "-p", "prod", "-A", "burst", "-q", "burst", "--wrap", "sleep 1",
              user="alice", check=False)
    assert proc.returncode != 0, "the burst account was accepted on production: job %s" % proc.stdout
    assert "account/partition combination" in proc.stderr


def test_second_converge_changes_nothing(lab):
    run = run_playbook("lab.yml")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0, "a second converge changed something:\n" + changed_tasks(run.output)


def test_check_mode_reports_no_drift(lab):
    run = run_playbook("lab.yml", "--check", "--diff")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0, run.output[-6000:]


WATCHED = ("/etc/slurm", "/etc/munge", "/etc/dask", "/etc/prometheus", "/etc/daskhpc")
DIGEST = ("for d in \"$@\"; do [ -d \"$d\" ] && find \"$d\" -type f -print0; done "
          "| sort -z | xargs -0 -r sha256sum")


def tree_digests(lab_hosts):
    """{host: sha256sum of every file under WATCHED} on every lab host."""
    results = adhoc(lab_hosts, "all", "command", argv=["sh", "-c", DIGEST, "digest", *WATCHED])
    return {host: result["stdout"] for host, result in results.items()}


def test_bad_site_model_is_refused_before_anything_changes(lab, lab_site, tmp_path, lab_hosts):
    bad = dict(lab_site)
    bad["partitions"] = [dict(p) for p in lab_site["partitions"]]
    bad["partitions"][2]["priority_tier"] = 50  # burst above production: would let burst preempt prod
    bad["burst"] = dict(lab_site["burst"], max_share_percent=150)
    bad["node_groups"] = [dict(g) for g in lab_site["node_groups"]]
    bad["node_groups"][0]["cpus"] = 4  # a change that would otherwise be written to slurm.conf
    extra = tmp_path / "bad.yml"
    extra.write_text(yaml.safe_dump({"daskhpc_site": bad}))
    before = tree_digests(lab_hosts)
    assert "/etc/slurm/slurm.conf" in before["ctl"]
    run = run_playbook("lab.yml", "-e", "@%s" % extra)
    assert run.rc != 0
    assert "partitions.burst.priority_tier" in run.output
    assert "burst.max_share_percent" in run.output
    assert "Fix:" in run.output
    assert tree_digests(lab_hosts) == before
    assert "Validate the site model" in run.output and "TASK [onprem.daskhpc" not in run.output


def test_example_site_passes_validation_and_syntax_check(tmp_path):
    inventory = REPO / "inventories" / "example-site"
    # Its secrets are in an ansible-vault file; the example's password is documented in secrets.yml.
    password = tmp_path / "vault-password"
    password.write_text("example-site-vault-password")
    password.chmod(0o600)
    run = run_playbook("validate.yml", "--vault-password-file", str(password), inventory=inventory,
                       extra_vars={"ansible_connection": "local"}, env={"ANSIBLE_HOST_KEY_CHECKING": "False"})
    assert run.rc == 0, run.output[-4000:]
    assert re.search(r"total_cores['\"]?:\s*2624", run.output), run.output
    syntax = run_playbook("site.yml", "--syntax-check", "--vault-password-file", str(password), inventory=inventory)
    assert syntax.rc == 0, syntax.output[-4000:]
