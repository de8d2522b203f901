"""daskhpc.worker: SIGTERM hands the worker's data off instead of losing it; --nworkers forks named workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from distributed import Client, LocalCluster

from daskhpc.worker import parse_args, worker_kwargs


def start_worker(address, name, *extra):
    return subprocess.Popen([sys.executable, "-m", "daskhpc.worker", address, "--name", name, "--nthreads", "1",
                             "--memory-limit", "500MB", "--grace-time", "20", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture()
def scheduler():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


def test_sigterm_retires_gracefully_and_keeps_the_data(scheduler):
    proc = start_worker(scheduler.scheduler.address, "burst-0")
    try:
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == 2)
        addr = next(a for a, w in scheduler.scheduler_info()["workers"].items() if w["name"] == "burst-0")
        futures = scheduler.map(lambda i: list(range(i * 1000)), range(20), workers=[addr], pure=False)
        scheduler.gather(futures)
        keys_there = scheduler.who_has(futures)
        assert all(addr in holders for holders in keys_there.values())
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, output
        assert "retiring gracefully" in output
        # The data moved to the other worker: nothing is recomputed, nothing is lost.
        holders = scheduler.who_has(futures)
        assert all(holders[f.key] and addr not in holders[f.key] for f in futures)
        assert scheduler.gather(futures)[5] == list(range(5000))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_nworkers_forks_named_workers_and_sigterm_reaches_them_all(scheduler):
    proc = start_worker(scheduler.scheduler.address, "job-7", "--nworkers", "3")
    try:
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == 4)
        names = sorted(str(w["name"]) for w in scheduler.scheduler_info()["workers"].values())
        assert names == ["0", "job-7-0", "job-7-1", "job-7-2"]
        os.kill(proc.pid, signal.SIGTERM)  # --signal=B:TERM reaches only the job's main process
        proc.communicate(timeout=60)
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == 1)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_command_line_like_dask_worker():
    args = parse_args(["tls://10.0.0.1:8786", "--name", "w-1", "--nthreads", "2", "--memory-limit", "1GiB",
                       "--death-timeout", "60", "--lifetime", "3240s", "--lifetime-stagger", "180s",
                       "--resources", "GPU=1,MEM=2", "--interface", "lo"])
    kwargs = worker_kwargs(args, "w-1-0")
    assert kwargs["name"] == "w-1-0" and kwargs["nthreads"] == 2 and kwargs["memory_limit"] == "1GiB"
    assert kwargs["death_timeout"] == 60 and kwargs["lifetime"] == "3240s"
    assert kwargs["resources"] == {"GPU": 1.0, "MEM": 2.0} and kwargs["interface"] == "lo"
    assert "security" not in kwargs and kwargs["dashboard"] is False
