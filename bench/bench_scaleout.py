"""Time from scale(16) to 16 connected workers: BurstCluster against plain dask-jobqueue SLURMCluster.

Both run on the same partition, QOS, account, interface and Python (the site environment), alternating
(A B, B A, ...) so that drift in the lab's load hits both alike; the median ratio is printed at the end.
A third variant, BurstCluster with one worker per job, separates the gain of forking several workers
from one process that has already imported distributed. A last section times only submission:
16 sbatch calls (dask-jobqueue's way, concurrent) against one 16-task job array, on held jobs.

    python bench/bench_scaleout.py [--pairs 5] [--workers 16] [--user alice]

Run as root it re-runs itself as a burst user (root has no burst association) with the site's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SITE_PYTHON = "/opt/daskhpc/venv/bin/python"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--user", default="alice", help="a member of the burst groups (when run as root)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def wait_jobs_gone(name, timeout=120):
    """Wait until this user's jobs called `name` have left the nodes, so the next run starts from empty."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "--me", "--noheader", "--name=" + name, "--format=%i"],
                             capture_output=True, text=True, check=False).stdout
        if not out.strip():
            return
        time.sleep(0.5)


def time_to_workers(make_cluster, n, job_name):
    from distributed import Client

    with make_cluster() as cluster, Client(cluster) as client:
        start = time.perf_counter()
        cluster.scale(n)
        client.wait_for_workers(n, timeout=600)
        elapsed = time.perf_counter() - start
        jobs = len(cluster.workers)
    wait_jobs_gone(job_name)
    return elapsed, jobs


def variants(n):
    import dask
    from dask_jobqueue import SLURMCluster

    from daskhpc import BurstCluster

    cfg = dask.config.get("daskhpc")

    def plain():
        return SLURMCluster(
            cores=1, processes=1, memory=cfg["worker-memory"], queue=cfg["partition"], account=cfg["account"],
            job_extra_directives=["--qos=%s" % cfg["qos"]], walltime="00:30:00", python=cfg["python"],
            interface=cfg["interface"], job_name="bench-plain", scheduler_options={"dashboard_address": ":0"})

    def burst():
        # memory 1GiB per worker so that 4-worker jobs fit every lab node (8000 MB); same total as plain
        return BurstCluster(memory="4GiB", walltime="00:30:00", job_name="bench-burst", progress=False)

    def burst_single():
        return BurstCluster(cores=1, processes=1, memory="2GiB", walltime="00:30:00", job_name="bench-single",
                            progress=False)

    return {"plain SLURMCluster": (plain, "bench-plain"), "BurstCluster": (burst, "bench-burst"),
            "BurstCluster 1 worker/job": (burst_single, "bench-single")}


def submission_only(n, cfg):
    """Seconds to submit n held jobs with n concurrent sbatch calls, and with one job array."""
    common = ["--hold", "-p", cfg["partition"], "-q", cfg["qos"], "-A", cfg["account"], "-t", "1", "-o", "/dev/null",
              "-J", "bench-submit", "--wrap", "true"]
    start = time.perf_counter()
    procs = [subprocess.Popen(["sbatch", "--parsable", *common], stdout=subprocess.PIPE, text=True)
             for _index in range(n)]
    ids = [p.communicate()[0].strip() for p in procs]
    separate = time.perf_counter() - start
    start = time.perf_counter()
    array = subprocess.run(["sbatch", "--parsable", "--array=0-%d" % (n - 1), *common], capture_output=True,
                           text=True, check=True).stdout.strip()
    one_array = time.perf_counter() - start
    subprocess.run(["scancel", *ids, array], check=False)
    wait_jobs_gone("bench-submit")
    return separate, one_array


def inner(args):
    import dask
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    found = variants(args.workers)
    results = {name: [] for name in found}
    order = list(found)
    for pair in range(args.pairs):
        names = order if pair % 2 == 0 else list(reversed(order))
        for name in names:
            make, job_name = found[name]
            elapsed, jobs = time_to_workers(make, args.workers, job_name)
            results[name].append(elapsed)
            print("pair %d  %-26s %6.2f s  (%d jobs)" % (pair + 1, name, elapsed, jobs), flush=True)
    separate, one_array = submission_only(args.workers, dask.config.get("daskhpc"))
    summary = {name: statistics.median(times) for name, times in results.items()}
    ratios = [p / b for p, b in zip(results["plain SLURMCluster"], results["BurstCluster"])]
    print("\nmedian time to %d workers over %d pairs:" % (args.workers, args.pairs))
    for name, value in summary.items():
        print("  %-26s %6.2f s" % (name, value))
    print("median ratio plain SLURMCluster / BurstCluster (per pair): %.2fx" % statistics.median(ratios))
    print("submission of %d held jobs: %d concurrent sbatch %.2f s, one job array %.2f s (%.1fx)"
          % (args.workers, args.workers, separate, one_array, separate / one_array))
    print("RESULT " + json.dumps({"times": results, "median": summary, "median_ratio": statistics.median(ratios),
                                  "submit_separate": separate, "submit_array": one_array}))


def main():
    args = parse_args()
    if args.inner:
        return inner(args)
    if os.geteuid() == 0:
        workdir = "/tmp/bench-scaleout-%s" % args.user
        os.makedirs(workdir, exist_ok=True)
        subprocess.run(["chown", args.user, workdir], check=True)
        command = ["runuser", "-u", args.user, "--", SITE_PYTHON, os.path.abspath(__file__), "--inner",
                   "--pairs", str(args.pairs), "--workers", str(args.workers)]
        return subprocess.run(command, cwd=workdir, check=False).returncode
    return inner(args)


if __name__ == "__main__":
    sys.exit(main())
