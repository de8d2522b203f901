"""BurstCluster on the PBS lab's live OpenPBS, run as the data scientist alice (from LDAP), never as root.

alice logs in to plogin over SSH with her own key and runs the client code there with the site's
environment (/opt/daskhpc/venv); `daskhpc.scheduler: pbs` in the site file makes `BurstCluster()` a
dask-jobqueue `PBSCluster`. Her scheduler runs on plogin, her workers in burst jobs on pcn1/pcn2.
carol (group research) plays production: `qsub -q prod` jobs sized so that PBS must preempt exactly
half of alice's jobs, which it requeues (`preempt_order` R) while her computation runs.

The SLURM twin is tests/integration/test_burstcluster.py; the script talks to the test the same way
(`EVENT name json` lines, one `RESULT json` line; the test answers with marker files).
"""

from __future__ import annotations

import json

import pytest
from pbs_helpers import QSTAT, QSUB, job, wait_for

from conftest import inventory_group, sh

pytestmark = pytest.mark.lab

USER = "alice"
PYTHON = "/opt/daskhpc/venv/bin/python"
PBSNODES = "/opt/pbs/bin/pbsnodes"
WORKERS = 4  # alice's per-user cap in the lab's burst queue is 4 cores; one core per worker

SCRIPT = r'''
import json, os, sys, time
from pathlib import Path
HERE = Path(sys.argv[1])
os.chdir(HERE)
def report(**values):
    print("RESULT " + json.dumps(values), flush=True)
def event(name, value=None):
    print("EVENT " + name + " " + json.dumps(value), flush=True)
def wait_for(name, timeout):
    deadline = time.time() + timeout
    while not (HERE / name).exists():
        if time.time() > deadline:
            raise TimeoutError("the test never wrote " + name)
        time.sleep(0.5)

import numpy as np
import dask.array as da
from daskhpc import BurstCluster

def slow(block):
    time.sleep(1.5)
    return block * 2 + 1

out = {}
with BurstCluster(workers=%(workers)d, processes=1) as cluster, cluster.get_client() as client:
    out["cluster_class"] = type(cluster).__name__ + "/" + cluster.job_cls.__name__
    client.wait_for_workers(%(workers)d, timeout=400)
    out["workers_before"] = len(client.scheduler_info()["workers"])
    out["job_script"] = cluster.job_script()
    # Integers, so that "equal" means exactly equal whatever the order of the sums.
    x = da.random.RandomState(42).randint(0, 1000, size=(4000, 400), chunks=(25, 400))
    local_x = x.compute(scheduler="sync")
    y = x.map_blocks(slow).persist()                       # data living on the workers
    future = client.compute(y.sum(axis=0) + y.map_blocks(slow).sum(axis=0))
    time.sleep(6)
    event("jobs", {name: job.job_id for name, job in cluster.workers.items()})
    wait_for("preempted", 400)                              # carol's production jobs have started
    out["done_when_preempted"] = future.done()
    try:
        result = future.result()
        local = (local_x * 2 + 1).sum(axis=0) + ((local_x * 2 + 1) * 2 + 1).sum(axis=0)
        out["equal"] = bool(np.array_equal(result, local))
        out["error"] = None
    except Exception as exc:
        out["error"] = "%%s: %%s" %% (type(exc).__name__, exc)
    wait_for("production_ended", 600)
    deadline = time.time() + 400
    while len(client.scheduler_info()["workers"]) < %(workers)d and time.time() < deadline:
        time.sleep(1)
    out["workers_after"] = len(client.scheduler_info()["workers"])
    out["replaced"], out["requeues"] = cluster.replaced, cluster.requeues
    out["status"] = cluster.status_text()
report(**out)
'''


def qstat_jobs(ids):
    """{full job id: attributes} of the given jobs, finished ones included (qstat -x, as root on the server).

    One qstat per job: OpenPBS 23.06.06's `qstat -F json` prints only the first of several job ids."""
    found = {}
    for job_id in ids:
        found.update(json.loads(sh(QSTAT, "-f", "-x", "-F", "json", job_id).stdout).get("Jobs") or {})
    return found


def hosts_of(attrs):
    return [chunk.split("/", 1)[0] for chunk in str(attrs.get("exec_host", "")).split("+") if chunk]


def free_cores(node):
    """Cores of a node that no job holds now (pbsnodes, as root)."""
    info = json.loads(sh(PBSNODES, "-F", "json", "-v", node).stdout)["nodes"][node]
    return int(info["resources_available"]["ncpus"]) - int((info.get("resources_assigned") or {}).get("ncpus", 0))


def submit_production(burst_ids, cores_per_job):
    """carol fills, on the nodes running alice's jobs, exactly the cores that preempting half of them frees.

    Each production job asks for a node's free cores plus those of the burst jobs it must take, so PBS
    (which preempts only what a job needs, youngest first) has to requeue that many burst jobs there and
    no more. Returns (production job ids, how many burst jobs they must preempt).
    """
    running = qstat_jobs(burst_ids)
    by_node = {}
    for job_id, attrs in running.items():
        assert attrs["job_state"] == "R", "alice's job %s is %s, not running" % (job_id, attrs["job_state"])
        for host in hosts_of(attrs):
            by_node.setdefault(host, []).append(job_id)
    to_preempt = len(burst_ids) // 2
    prod_ids, covered = [], 0
    for node, ids in sorted(by_node.items(), key=lambda item: -len(item[1])):
        take = min(len(ids), to_preempt - covered)
        if take <= 0:
            break
        ncpus = free_cores(node) + take * cores_per_job
        prod_ids.append(sh(QSUB, "-q", "prod", "-l", "select=1:ncpus=%d:host=%s" % (ncpus, node),
                           "-l", "walltime=00:05:00", "-N", "production", "-j", "oe", "-o", "/dev/null",
                           "--", "/bin/sleep", "60", user="carol").stdout.strip())
        covered += take
    return prod_ids, covered


@pytest.fixture(scope="module")
def site_env(lab):
    """alice resolves, and the site's Python is on plogin and on every compute host (the dask_client role)."""
    assert sh("getent", "passwd", USER, host="plogin", check=False).returncode == 0, "%s does not resolve" % USER
    for host in ["plogin", *inventory_group("pbs_compute")]:
        assert sh("test", "-x", PYTHON, host=host, check=False).returncode == 0, \
            "the dask_client role did not create %s on %s" % (PYTHON, host)
    return lab


def test_burstcluster_computes_exactly_while_production_preempts_half_its_workers(site_env, user_script):
    script = user_script(USER)
    proc = script.start(SCRIPT % {"workers": WORKERS})
    named = script.event("jobs", 500)  # fails at once if the client ends early
    burst_ids = sorted(named.values())
    assert len(burst_ids) == WORKERS  # one worker per job
    full = qstat_jobs(burst_ids)
    for job_id, attrs in full.items():
        assert (attrs["queue"], attrs["Job_Owner"].split("@")[0], attrs["Account_Name"]) == \
            ("burst", USER, "burst"), (job_id, attrs["queue"], attrs["Job_Owner"], attrs.get("Account_Name"))
        assert str(attrs["Rerunable"]) == "True", attrs["Rerunable"]
    runs_before = {job_id: int(attrs.get("run_count", 0)) for job_id, attrs in full.items()}

    prod_ids, must_preempt = submit_production(sorted(full), cores_per_job=1)
    assert must_preempt == WORKERS // 2
    wait_for("the production jobs running", lambda: all(job(p)["job_state"] == "R" for p in prod_ids), timeout=300)
    after = qstat_jobs(sorted(full))
    requeued = sorted(j for j, attrs in after.items() if int(attrs.get("run_count", 0)) > runs_before[j]
                      or attrs["job_state"] == "Q")
    # PBS requeued (not deleted, not suspended) exactly the burst jobs production needed: half of alice's.
    assert len(requeued) == WORKERS // 2, {j: (a["job_state"], a.get("run_count")) for j, a in after.items()}
    assert all(after[j]["job_state"] in ("Q", "R") for j in requeued), {j: after[j]["job_state"] for j in requeued}
    script.mark("preempted")

    wait_for("the production jobs to end", lambda: all(job(p)["job_state"] in ("F", "X") for p in prod_ids),
             timeout=300)
    script.mark("production_ended")
    done = proc.finish(900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, "client script failed (rc=%d):\n%s\n%s" % (
        done.returncode, done.stdout[-3000:], done.stderr[-6000:])
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["cluster_class"] == "BurstCluster/BurstPBSJob"  # the site's scheduler picks the job class
    assert "#PBS -q burst" in result["job_script"] and "#PBS -r y" in result["job_script"], result["job_script"]
    assert result["workers_before"] == WORKERS
    assert result["done_when_preempted"] is False, "the computation ended before the preemption: no test"
    assert result["error"] is None, result["error"]  # in particular no KilledWorker
    assert result["equal"] is True
    # The cluster saw the preemption (requeues) or replaced the lost jobs, and is back to full size.
    assert result["replaced"] + result["requeues"] >= WORKERS // 2, result
    assert result["workers_after"] == WORKERS, result["status"]
    assert "KilledWorker" not in done.stderr
