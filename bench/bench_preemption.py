"""Production job start latency with the burst partition full versus empty, on the lab's real SLURM.

Each round submits one production job that needs a whole node (n4 on `prod`), either onto an idle
node ("empty") or onto a node a burst job holds ("full": the burst job must be preempted and requeued
first). Latency is SLURM's own StartTime - SubmitTime, so the measurement does not include the
polling of this script. Rounds alternate so both sides see the same machine state.

Run as root on the lab:  .venv/bin/python bench/bench_preemption.py --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from datetime import datetime

BURST_USER = "alice"
NODE = "n4"


def run(*argv, user=None):
    if user:
        argv = ("runuser", "-u", user, "--", *argv)
    return subprocess.run(argv, capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()


def job(job_id):
    out = run("scontrol", "show", "job", "--oneliner", job_id)
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def wait(predicate, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError("condition not met in %ss" % timeout)


def node_idle():
    return run("sinfo", "--noheader", "--Node", "-n", NODE, "--format=%t").splitlines()[0].strip() == "idle"


def one_round(full, burst_exits_on_term):
    burst_id = None
    if full:
        # A Dask worker leaves at once on SIGTERM (it retires); `sleep` ignores nothing and dies too,
        # while `trap '' TERM` models a job that uses its whole grace time.
        script = "sleep 600" if burst_exits_on_term else "trap '' TERM; sleep 600"
        burst_id = run("sbatch", "--parsable", "-p", "burst", "-A", "burst", "-q", "burst", "--requeue",
                       "-w", NODE, "-n", "8", "--wrap", script, user=BURST_USER)
        wait(lambda: job(burst_id)["JobState"] == "RUNNING")
    prod_id = run("sbatch", "--parsable", "-p", "prod", "-w", NODE, "-n", "8", "--wrap", "sleep 1")
    wait(lambda: job(prod_id)["StartTime"] != "Unknown" and job(prod_id)["JobState"] in ("RUNNING", "COMPLETED",
                                                                                         "COMPLETING"))
    info = job(prod_id)
    fmt = "%Y-%m-%dT%H:%M:%S"
    latency = (datetime.strptime(info["StartTime"], fmt) - datetime.strptime(info["SubmitTime"], fmt)).total_seconds()
    run("scancel", prod_id, *([burst_id] if burst_id else []))
    wait(node_idle)
    return latency


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--stubborn", action="store_true",
                        help="burst jobs ignore SIGTERM and use their whole GraceTime")
    args = parser.parse_args()
    grace = run("scontrol", "show", "partition", "burst", "--oneliner").split("GraceTime=")[1].split()[0]
    wait(node_idle)
    empty, full = [], []
    for i in range(args.rounds):
        empty.append(one_round(False, not args.stubborn))
        full.append(one_round(True, not args.stubborn))
        print("round %2d: empty %4.0fs  full %4.0fs" % (i + 1, empty[-1], full[-1]), flush=True)
    print()
    print("burst GraceTime: %ss; burst jobs %s SIGTERM" % (grace, "ignore" if args.stubborn else "exit on"))
    print("%-28s %8s %8s" % ("production start latency", "median", "max"))
    print("%-28s %7.1fs %7.1fs" % ("burst partition empty", statistics.median(empty), max(empty)))
    print("%-28s %7.1fs %7.1fs" % ("burst partition full", statistics.median(full), max(full)))
    print("full - empty (median): %.1fs" % (statistics.median(full) - statistics.median(empty)))


if __name__ == "__main__":
    main()
