"""BurstCluster on the lab's real SLURM, run as the data scientist alice (from LDAP), never as root.

alice logs in to the login host over SSH with her own key and runs the client code there with the
site's environment (/opt/daskhpc/venv, made by the dask_client role through playbooks/lab.yml);
her scheduler runs on login, her workers on the compute hosts. root only plays production on ctl,
submitting `sbatch -p prod` jobs that preempt half of alice's workers while her computation runs.
"""

from __future__ import annotations

import json

import pytest
from burst_helpers import PREAMBLE, PYTHON, USER, result_of, squeue
from conftest import adhoc, inventory_group, sh, wait_until

from daskhpc.core.site_model import validate

pytestmark = pytest.mark.lab

WORKERS = 16

PREEMPTION_SCRIPT = PREAMBLE + r'''
import numpy as np
import dask.array as da
from daskhpc import BurstCluster

def slow(block):
    time.sleep(1.5)
    return block * 2 + 1

out = {}
with BurstCluster(workers=%(workers)d, memory="4GiB") as cluster, cluster.get_client() as client:
    client.wait_for_workers(%(workers)d, timeout=300)
    info = client.scheduler_info()
    out["workers_before"] = len(info["workers"])
    out["scheduler"] = cluster.scheduler_address
    out["job_script"] = cluster.job_script()
    # Integers, so that "equal" means exactly equal whatever the order of the sums.
    x = da.random.RandomState(42).randint(0, 1000, size=(8000, 400), chunks=(25, 400))
    local_x = x.compute(scheduler="sync")
    y = x.map_blocks(slow).persist()                       # data living on the workers
    future = client.compute(y.sum(axis=0) + y.map_blocks(slow).sum(axis=0))
    time.sleep(6)
    jobs = {name: job.job_id for name, job in cluster.workers.items()}
    event("jobs", jobs)
    wait_for("preempted", 300)                              # root's production jobs have started
    out["done_when_preempted"] = future.done()
    try:
        result = future.result()
        local = (local_x * 2 + 1).sum(axis=0) + ((local_x * 2 + 1) * 2 + 1).sum(axis=0)
        out["equal"] = bool(np.array_equal(result, local))
        out["error"] = None
    except Exception as exc:
        out["error"] = "%%s: %%s" %% (type(exc).__name__, exc)
    out["replaced"], out["requeues"] = cluster.replaced, cluster.requeues
    wait_for("production_ended", 600)
    deadline = time.time() + 300
    while len(client.scheduler_info()["workers"]) < %(workers)d and time.time() < deadline:
        time.sleep(1)
    out["workers_after"] = len(client.scheduler_info()["workers"])
    out["status"] = cluster.status_text()
    out["jobs_after"] = {name: job.job_id for name, job in cluster.workers.items()}
report(**out)
'''

POLICY_SCRIPT = PREAMBLE + r'''
from daskhpc import BurstCluster, PolicyError
attempts = {
    "walltime": dict(walltime="05:00:00"),
    "partition": dict(job_extra_directives=["-p prod"]),
    "partition_long": dict(job_extra_directives=["--partition=bigmem"]),
    "qos": dict(job_extra_directives=["--qos=normal"]),
    "account": dict(job_extra_directives=["#SBATCH -A research"]),
    "queue_kwarg": dict(queue="prod"),
    "cores": dict(cores=32, processes=4),
}
out = {}
for label, kwargs in attempts.items():
    try:
        BurstCluster(progress=False, **kwargs).close()
        out[label] = None
    except PolicyError as exc:
        out[label] = str(exc)
with BurstCluster(progress=False) as cluster:
    try:
        cluster.scale(64)
        out["scale"] = None
    except PolicyError as exc:
        out["scale"] = str(exc)
    out["requested_after_refusal"] = len(cluster.worker_spec)
report(**out)
'''


@pytest.fixture(scope="module")
def site_env(lab):
    """The lab converged (lab.yml includes dask_client.yml); alice is a directory user with an environment
    on the login host, and the compute hosts have the same Python for her workers."""
    assert sh("getent", "passwd", USER, host="login", check=False).returncode == 0, "%s does not resolve" % USER
    for host in ["login", *inventory_group("slurm_compute")]:
        assert sh("test", "-x", PYTHON, host=host, check=False).returncode == 0, \
            "the dask_client role did not create %s on %s" % (PYTHON, host)
    return lab


def production_partition_of(node, site):
    for part in site["partitions"]:
        if part["class"] == "production" and node in part["nodes"]:
            return part["name"]
    raise AssertionError("node %s is in no production partition" % node)


def submit_production(jobs, site):
    """As root on ctl, fill the nodes running half of alice's jobs with production work; return the prod job ids."""
    by_node = {}
    for job_id in jobs:
        node = squeue("--jobs=" + job_id, "--format=%N").strip()
        by_node.setdefault(node, []).append(job_id)
    chosen, covered = [], 0
    for node, ids in sorted(by_node.items(), key=lambda item: -len(item[1])):
        if covered >= len(jobs) / 2:
            break
        chosen.append(node)
        covered += len(ids)
    assert chosen and "" not in chosen, "alice's jobs are not all running: %s" % by_node
    cores = {n["NodeName"]: n["CPUs"] for group in site["node_groups"] for n in
             [{"NodeName": name, "CPUs": group["cpus"]} for name in group["node_names"]]}
    prod_ids = []
    for node in chosen:
        proc = sh("sbatch", "--parsable", "-p", production_partition_of(node, site), "-w", node,
                  "-c", str(cores[node]), "--mem=1G", "-t", "5", "-J", "production", "-o", "/dev/null",
                  "--wrap", "sleep 45")
        prod_ids.append(proc.stdout.strip().split(";")[0])
    return prod_ids, covered


def test_burst_computation_survives_preemption_and_size_is_restored(site_env, user_script, lab_site):
    site = validate(lab_site)
    script = user_script(USER)
    proc = script.start(PREEMPTION_SCRIPT % {"workers": WORKERS})
    jobs = list(script.event("jobs", 400).values())  # fails at once if the client ends early
    assert len(jobs) == WORKERS // 4  # four workers per job (forked from one process)
    for line in squeue("--jobs=" + ",".join(jobs), "--format=%P|%q|%a|%u").splitlines():
        assert line.split("|") == ["burst", "burst", "burst", USER]
    prod_ids, preempted = submit_production(jobs, site)
    assert preempted == len(jobs) // 2
    assert wait_until(lambda: all(s == "RUNNING" for s in squeue(
        "--jobs=" + ",".join(prod_ids), "--states=all", "--format=%T").split()), 180), \
        "production jobs did not start: they should preempt burst jobs"
    script.mark("preempted")
    assert wait_until(lambda: not squeue("--jobs=" + ",".join(prod_ids), "--format=%i").strip(), 240)
    script.mark("production_ended")
    done = proc.finish(600)
    err_text = done.stderr
    result = result_of(done)
    assert result["workers_before"] == WORKERS
    assert result["done_when_preempted"] is False, "the computation ended before the preemption: no test"
    assert result["error"] is None, result["error"]  # in particular no KilledWorker
    assert result["equal"] is True
    assert result["replaced"] + result["requeues"] >= len(jobs) // 2
    assert result["workers_after"] == WORKERS, result["status"]
    assert "KilledWorker" not in err_text


def test_job_script_is_a_dask_jobqueue_script_on_the_burst_partition(site_env, user_script, lab_hosts):
    proc = user_script(USER).run(PREAMBLE + r'''
import urllib.request
from daskhpc import BurstCluster
with BurstCluster(progress=False) as cluster:
    # The dashboard (loopback, token-gated): the link's token becomes a cookie, as in a browser.
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with browser.open(cluster.dashboard_link.replace("/status", "/metrics"), timeout=30) as page:
        metrics = page.read().decode()
    report(script=cluster.job_script(), scheduler=cluster.scheduler_address, link=cluster.dashboard_link,
           metrics=metrics)
''', timeout=120)
    result = result_of(proc)
    script = result["script"]
    for directive in ("#SBATCH -p burst", "#SBATCH -A burst", "#SBATCH --qos=burst", "#SBATCH --requeue",
                      "#SBATCH -t 04:00:00", "#SBATCH --signal=B:TERM@"):
        assert directive in script
    assert "exec /opt/daskhpc/venv/bin/python -m daskhpc.worker " + result["scheduler"] in script
    credential = "/home/%s/.daskhpc/tls/user.pem" % USER
    tls = adhoc(lab_hosts, "login", "stat", path=credential)["login"]["stat"]["exists"]
    assert result["scheduler"].startswith("tls://" if tls else "tcp://")
    if tls:  # the worker gets alice's credential, and the identity-bound security is used
        assert "--tls-cert /home/alice/.daskhpc/tls/user.pem" in script
    # Dask's own Prometheus metrics, reached by the owner through the dashboard's token
    assert result["link"].startswith("http://127.0.0.1:") and "?token=" in result["link"]
    assert "dask_scheduler_workers" in result["metrics"] and "dask_scheduler_clients" in result["metrics"]


def test_doctor_passes_for_a_data_scientist_and_says_what_to_fix_for_others(site_env):
    ok = sh("/opt/daskhpc/venv/bin/daskhpc", "doctor", user=USER, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1] == "9 passed, 0 failed"
    denied = sh("/opt/daskhpc/venv/bin/daskhpc", "doctor", "--json", user="mallory", check=False)
    assert denied.returncode == 1
    checks = {c["name"]: c for c in json.loads(denied.stdout)}
    assert not checks["burst access"]["ok"] and "datasci" in checks["burst access"]["fix"]
    assert not checks["burst association"]["ok"]
    assert checks["batch system"]["ok"] and checks["site configuration"]["ok"]


def test_requests_beyond_policy_fail_with_the_clear_message(site_env, user_script):
    result = result_of(user_script(USER).run(POLICY_SCRIPT, timeout=180))
    assert "walltime=05:00:00 is too long: burst jobs may run at most 04:00:00" in result["walltime"]
    for label in ("partition", "partition_long"):
        assert "would change the partition" in result[label]
    assert "would change the QOS" in result["qos"]
    assert "would change the account" in result["account"]
    assert "queue='prod'" in result["queue_kwarg"]
    assert "cores=32 per job is too many" in result["cores"]
    assert "64 workers" in result["scale"] and "at most 16 burst cores" in result["scale"]
    assert result["requested_after_refusal"] == 0
    for message in result.values():
        if isinstance(message, str):
            assert "burst policy" in message and "ask " in message


LIFETIME_SCRIPT = PREAMBLE + r'''
from daskhpc import BurstCluster
# walltime 4 min: workers retire after 78-90 s (walltime - margin 90 s - SLURM's signal minute - stagger 12 s),
# before the earliest --signal (SLURM may send it a minute early) and the limit
with BurstCluster(walltime="00:04:00", memory="4GiB") as cluster, cluster.get_client() as client:
    cluster.adapt(minimum=4, maximum=4)
    client.wait_for_workers(4, timeout=300)
    first = {name: job.job_id for name, job in cluster.workers.items()}
    deadline = time.time() + 300
    while time.time() < deadline and (set(cluster.workers) & set(first)
                                      or len(client.scheduler_info()["workers"]) < 4):
        time.sleep(2)
    answer = client.submit(sum, range(10)).result(timeout=120)
    report(first=first, now={name: job.job_id for name, job in cluster.workers.items()},
           workers=len(client.scheduler_info()["workers"]), replaced=cluster.replaced, answer=answer,
           script=cluster.job_script())
'''


def test_adapt_keeps_its_size_when_workers_reach_their_lifetime(site_env, user_script):
    """dask-jobqueue #691: workers retired by --lifetime are replaced, under adapt too."""
    result = result_of(user_script(USER).run(LIFETIME_SCRIPT, timeout=600))
    assert "#SBATCH -t 00:04:00" in result["script"] and "--lifetime 78s" in result["script"]
    assert len(result["first"]) == 1 and result["replaced"] >= 1
    assert not set(result["first"].values()) & set(result["now"].values())
    assert result["workers"] == 4 and result["answer"] == 45
    states = sh("sacct", "--noheader", "--parsable2", "--allocations",
                "--jobs=" + ",".join(result["first"].values()), "--format=State").stdout.split()
    assert states and all(state == "COMPLETED" for state in states), states  # retired, not killed at TIMEOUT
