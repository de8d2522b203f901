"""First use: no size means adapt within policy; no workers is said, and on compute; adapt's idle period;
a worker that cannot start is reported with its cause and log; the progress line at transitions."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dask.config
import pytest
from client_helpers import lab_config, python_with_site_file, site_file, wait_for
from distributed import Client

from daskhpc.cluster import base as cluster_module
from daskhpc.scheduler.slurm import SlurmBatch
from daskhpc.cluster.base import BurstAdaptive, BurstCluster, WorkerStartError, start_failure_cause
from daskhpc.cluster.progress import summarize


@pytest.fixture()
def lab_site(tmp_path):
    with site_file(tmp_path / "site", lab_config(interface=None)) as path:
        yield Path(path)


def local(**kwargs):
    return BurstCluster(progress=False, security=False, scheduler_options={"host": "127.0.0.1"}, **kwargs)


# --- the progress line -------------------------------------------------------------------------------


def test_progress_says_when_no_workers_were_asked_for():
    assert summarize(0, 0, []) == ("no workers: none asked for. Ask for some with cluster.scale(16) or "
                                   "cluster.adapt()")
    assert "none asked for and 3 tasks are waiting" in summarize(0, 0, [], waiting=3)


def test_progress_while_adapting():
    assert summarize(0, 0, [], adaptive_maximum=16) == (
        "0/0 workers (adaptive, at most 16): workers are asked for when there is work")
    assert summarize(4, 8, [None, None], adaptive_maximum=16).startswith("4/8 workers (adaptive, at most 16)")


def test_progress_says_workers_are_leaving_rather_than_more_than_asked():
    assert summarize(1, 0, []) == "1/0 workers, 1 leaving"
    assert summarize(16, 4, [None]) == "16/4 workers, 12 leaving, 1 submitted"


# --- no size: adapt within policy ---------------------------------------------------------------------


def test_no_size_adapts_within_policy_with_an_idle_period(lab_site):
    with local() as cluster:
        # Said at once, not at the first poll.
        assert "adaptive, at most 16" in cluster.status_text(), cluster.status_text()
        assert isinstance(cluster._adaptive, BurstAdaptive)
        assert cluster._adaptive.maximum == 16          # the lab's 16 burst cores per user, 1 core per worker
        assert cluster._adaptive.wait_count == 180      # daskhpc.adapt-idle 180s, one check a second
        cluster.adapt(idle_timeout="60s")
        assert cluster._adaptive.wait_count == 60
        cluster.scale(0)                                # a fixed size: adaptivity stops
        assert cluster._adaptive is None
    assert cluster.status_text().startswith("closed"), cluster.status_text()


def test_idle_period_from_the_users_dask_config(lab_site):
    with dask.config.set({"daskhpc.adapt-idle": "10s"}), local() as cluster:
        assert wait_for(lambda: cluster._adaptive is not None)
        assert cluster._adaptive.wait_count == 10


def test_zero_workers_says_so_on_compute(lab_site):
    with local(workers=0) as cluster, Client(cluster) as client:
        assert cluster._adaptive is None
        assert cluster.status_text().startswith("no workers: none asked for"), cluster.status_text()
        future = client.submit(sum, [1, 2])
        assert wait_for(lambda: "1 tasks are waiting" in cluster.status_text()), cluster.status_text()
        assert "cluster.scale(16)" in cluster.status_text()
        del future


# --- workers that cannot start --------------------------------------------------------------------------


def test_cause_from_a_worker_log():
    log = ("2026-12-01 22:00:00 daskhpc.worker ERROR worker x failed\nTraceback (most recent call last):\n"
           "  File \"x.py\", line 1\nModuleNotFoundError: No module named 'nosuchmod'\n"
           "2026-12-01 22:00:01 distributed.worker INFO closing\n")
    assert start_failure_cause(log) == "ModuleNotFoundError: No module named 'nosuchmod'"
    oom = "slurmstepd: error: Detected 1 oom_kill event in StepId=12.batch. Some of your processes may have been killed"
    assert start_failure_cause("hello\n" + oom + "\n").startswith("slurmstepd: error: Detected 1 oom_kill")
    assert start_failure_cause("") is None


def test_a_worker_that_cannot_start_fails_the_computation_with_its_cause_and_log(lab_site, tmp_path, monkeypatch):
    """A real worker process fails at start (its preload module is missing) writing its log where SLURM would;
    squeue then says its job FAILED. The client's compute() raises the cause and the log's path."""
    monkeypatch.setattr(cluster_module, "MAX_QUICK_FAILURES", 1)
    squeue = tmp_path / "squeue"
    squeue.write_text("#!/bin/sh\necho '77|FAILED|NonZeroExitCode|N/A|N/A|10:00|n1'\n")
    squeue.chmod(0o755)
    with local(workers=0) as cluster, Client(cluster) as client:
        log = Path(cluster.error_log("77"))
        with open(log, "w") as handle:
            worker = subprocess.run(python_with_site_file(lab_site) + [
                "daskhpc.worker", cluster.scheduler_address, "--name", "w-0", "--nthreads", "1",
                "--preload", "nosuchmod_for_test"], stdout=handle, stderr=subprocess.STDOUT, timeout=120,
                check=False)
        assert worker.returncode != 0
        # The job as the cluster submitted it (its spec entry), now ended.
        job = cluster.new_worker_spec()
        name = next(iter(job))
        cluster.worker_spec.update(job)
        cluster.workers[name] = type("Job", (), {"job_id": "77", "batch_state": None, "last_phase": None,
                                                 "ever_ran": False, "retiring": False, "missing_polls": 0,
                                                 "had_workers": False})()
        cluster.batch = SlurmBatch(squeue=str(squeue), sacct="/bin/true", scontrol="/bin/true")
        future = client.submit(sum, [1, 2])
        with pytest.raises(WorkerStartError) as failed:
            future.result(timeout=60)
    message = str(failed.value)
    assert "No module named 'nosuchmod_for_test'" in message and str(log) in message
    assert "not resubmitting" in message
