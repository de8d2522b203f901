"""Faults that only a multi-host site can show: a compute host cut off or powered off while alice
computes, and alice's client (her Dask scheduler) killed on the login host.

alice runs BurstCluster on the login host over SSH, as in test_burstcluster.py; the faults come
from the lab harness on this machine (lab/nspawn_lab.py cut/restore, stop/start), which is what
the network and the power switch would do on a real site. Every fault is undone in `finally`.
"""

from __future__ import annotations

import re
import time

import pytest
from burst_helpers import PREAMBLE, PYTHON, USER, node_state, nodes_of, result_of, squeue
from conftest import harness, inventory_group, sh, slurm_config, wait_until

from dask.utils import parse_timedelta

pytestmark = [pytest.mark.lab, pytest.mark.timeout(3600, func_only=True)]

WORKERS = 16
IN_SERVICE = ("idle", "mixed")
# How long a host stays cut off at most while the computation goes on without it: distributed gives up
# on a silent peer after its TCP timeout (30 s by default: keepalive and TCP_USER_TIMEOUT), then
# recomputes what the host held on the other workers.
CUT_SECONDS = 300

FAULT_SCRIPT = PREAMBLE + r'''
import numpy as np
import dask.array as da
from daskhpc import BurstCluster

def slow(block):
    time.sleep(1.5)
    return block * 2 + 1

out = {}
with BurstCluster(workers=%(workers)d, memory="4GiB") as cluster, cluster.get_client() as client:
    client.wait_for_workers(%(workers)d, timeout=300)
    out["workers_before"] = len(client.scheduler_info()["workers"])
    event("job_script", cluster.job_script())
    # Integers, so that "equal" means exactly equal whatever the order of the sums.
    x = da.random.RandomState(42).randint(0, 1000, size=(8000, 400), chunks=(25, 400))
    local_x = x.compute(scheduler="sync")
    y = x.map_blocks(slow).persist()                       # data living on the workers
    future = client.compute(y.sum(axis=0) + y.map_blocks(slow).sum(axis=0))
    time.sleep(6)
    event("jobs", {name: job.job_id for name, job in cluster.workers.items()})
    wait_for("fault", 600)                                 # the test has cut, stopped or killed
    out["done_at_fault"] = future.done()
    started = time.time()
    try:
        result = future.result(timeout=900)
        local = (local_x * 2 + 1).sum(axis=0) + ((local_x * 2 + 1) * 2 + 1).sum(axis=0)
        out["equal"] = bool(np.array_equal(result, local))
        out["error"] = None
    except Exception as exc:
        out["error"] = "%%s: %%s" %% (type(exc).__name__, exc)
    out["seconds_to_result"] = round(time.time() - started, 1)
    out["workers_at_result"] = len(client.scheduler_info()["workers"])
    event("result", {"error": out["error"], "seconds": out["seconds_to_result"],
                     "workers": out["workers_at_result"]})
    wait_for("restored", 900)                              # the host is back (or was never touched)
    out["status"] = cluster.status_text()
report(**out)
'''


@pytest.fixture(scope="module")
def site_env(lab):
    assert sh("getent", "passwd", USER, host="login", check=False).returncode == 0, "%s does not resolve" % USER
    for host in ["login", *inventory_group("slurm_compute")]:
        assert sh("test", "-x", PYTHON, host=host, check=False).returncode == 0, \
            "the dask_client role did not create %s on %s" % (PYTHON, host)
    return lab


def start_computation(user_script):
    """alice's 16-worker computation, under way; (script, its process, her job ids)."""
    script = user_script(USER)
    proc = script.start(FAULT_SCRIPT % {"workers": WORKERS})
    job_script = script.event("job_script", 400)
    jobs = list(script.event("jobs", 300).values())
    assert len(jobs) == WORKERS // 4
    states = squeue("--jobs=" + ",".join(jobs), "--format=%T").split()
    assert states == ["RUNNING"] * len(jobs), states
    return script, proc, jobs, job_script


def compute_host_of(jobs):
    """A compute host (cn*, else any slurmd host) running some of the jobs; (host, its job ids)."""
    by_node = nodes_of(jobs)
    assert "" not in by_node, "alice's jobs are not all running: %s" % by_node
    compute = inventory_group("cpu_nodes")
    host = sorted(by_node, key=lambda n: (n not in compute, -len(by_node[n]), n))[0]
    return host, by_node[host]


def wait_back_in_service(host, since, timeout):
    """Seconds from `since` (time.monotonic()) until the host's node is idle or mixed again (sinfo on ctl)."""
    seen = []

    def back():
        state = node_state(host)
        if not seen or seen[-1] != state:
            seen.append(state)
        return state in IN_SERVICE

    assert wait_until(back, timeout, step=2), "node %s not back in service after %ss: states %s" % (
        host, timeout, " -> ".join(seen))
    return time.monotonic() - since


def wait_noticed(host, since, timeout):
    """(seconds from `since`, state) once slurmctld has marked the node unreachable (not responding '*',
    or down): only then does its return to service show anything."""

    def noticed():
        state = node_state(host)
        return state if state.endswith("*") or state.startswith(("down", "fail")) else None

    state = wait_until(noticed, timeout - (time.monotonic() - since), step=2)
    assert state, "slurmctld did not notice within %ss that %s was unreachable (state %s)" % (
        timeout, host, node_state(host))
    return time.monotonic() - since, state


def slurmd_timeout():
    return int(slurm_config("SlurmdTimeout").split()[0])


def assert_exact(result):
    assert result["workers_before"] == WORKERS
    assert result["done_at_fault"] is False, "the computation ended before the fault: no test"
    assert result["error"] is None, result["error"]  # in particular no KilledWorker
    assert result["equal"] is True


def test_computation_survives_a_compute_host_cut_off_and_the_node_returns(site_env, user_script):
    """The link stays down until the result is in and slurmctld has marked the node unreachable;
    then it comes back and the node must return to service by itself (ReturnToService)."""
    script, proc, jobs, _job_script = start_computation(user_script)
    host, lost = compute_host_of(jobs)
    restored_at = None
    try:
        harness("cut", host)
        cut_at = time.monotonic()
        script.mark("fault")
        try:
            outcome = script.event("result", CUT_SECONDS)
            finished_while_cut = True
        except AssertionError:
            if not proc.running():
                raise
            finished_while_cut = False
        noticed_after, state = wait_noticed(host, cut_at, slurmd_timeout() + 120)
        cut_for = time.monotonic() - cut_at
        harness("restore", host)
        restored_at = time.monotonic()
        if not finished_while_cut:
            outcome = script.event("result", 900)
    finally:
        if restored_at is None:
            harness("restore", host)
    script.mark("restored")
    result = result_of(proc.finish(300))
    print("link of %s (jobs %s) cut for %.0f s: result %s the cut, %.0f s after it, with %d workers left; "
          "slurmctld marked the node %s after %.0f s" % (
              host, ",".join(lost), cut_for, "during" if finished_while_cut else "only after", outcome["seconds"],
              outcome["workers"], state, noticed_after))
    assert_exact(result)
    back = wait_back_in_service(host, restored_at, slurmd_timeout() + 180)
    print("node %s back in service %.0f s after its link was restored" % (host, back))


def test_computation_survives_a_compute_host_powered_off_and_the_node_returns(site_env, user_script):
    """The host stays off until the result is in and slurmctld has marked the node unreachable; once it
    is powered on again its node must return to service by itself."""
    script, proc, jobs, _job_script = start_computation(user_script)
    host, lost = compute_host_of(jobs)
    try:
        harness("stop", host)
        stopped_at = time.monotonic()
        script.mark("fault")
        outcome = script.event("result", 900)
        noticed_after, state = wait_noticed(host, stopped_at, slurmd_timeout() + 120)
    finally:
        harness("start", host)  # returns once the host answers SSH again
    started_at = time.monotonic()
    script.mark("restored")
    result = result_of(proc.finish(300))
    print("host %s (jobs %s) powered off mid-computation: result %.0f s after, with %d workers left; slurmctld "
          "marked the node %s after %.0f s" % (host, ",".join(lost), outcome["seconds"], outcome["workers"], state,
                                               noticed_after))
    assert_exact(result)
    back = wait_back_in_service(host, started_at, slurmd_timeout() + 300)
    print("node %s back in service %.0f s after the host was up again" % (host, back))


def live_jobs(jobs):
    """Those of `jobs` that squeue still shows (pending, running, completing...)."""
    proc = sh("squeue", "--noheader", "--jobs=" + ",".join(jobs), "--format=%i|%T|%N", check=False)
    if proc.returncode != 0 and "Invalid job id" in proc.stderr:
        return []  # purged from slurmctld's memory: long gone
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_worker_jobs_leave_by_themselves_when_the_client_dies(site_env, user_script):
    """kill -9 of alice's client python on login (her scheduler runs in it): nobody is left to scancel
    her jobs, so each worker must notice the lost scheduler and end its job."""
    script, proc, jobs, job_script = start_computation(user_script)
    match = re.search(r"--death-timeout\s+(\S+)", job_script)
    assert match, "the job script sets no --death-timeout:\n" + job_script
    death_timeout = parse_timedelta(match.group(1), default="seconds")
    kill_wait = int(slurm_config("KillWait").split()[0])
    bound = death_timeout + kill_wait + 30
    client = sh("ps", "-o", "user=,args=", "-p", str(proc.pid), host="login").stdout.split()
    assert client[:2] == [USER, PYTHON] and client[2] == script.path("script.py"), client

    sh("kill", "-9", str(proc.pid), host="login")
    killed_at = time.monotonic()
    done = proc.finish(60)
    assert done.returncode != 0 and "RESULT " not in done.stdout
    assert wait_until(lambda: not live_jobs(jobs), bound + 60, step=1), \
        "alice's worker jobs are still in the burst partition %ds after her client died: %s" % (
            bound + 60, live_jobs(jobs))
    gone_after = time.monotonic() - killed_at
    print("client killed: its %d worker jobs left the burst partition after %.1f s (bound %.0f s = death "
          "timeout %.0f s + KillWait %d s + 30 s)" % (len(jobs), gone_after, bound, death_timeout, kill_wait))
    assert gone_after <= bound
    states = sh("sacct", "--noheader", "--parsable2", "--allocations", "--jobs=" + ",".join(jobs),
                "--format=JobID,State,ExitCode").stdout.split()
    print("their accounting: %s" % " ".join(states))
    assert not squeue("--user=" + USER, "--partition=burst", "--format=%i").split(), \
        "burst jobs of %s still queued" % USER
