"""Production job start latency with the burst partition full versus empty, on the lab's real SLURM or PBS.

Each round submits one production job that needs a whole node (n4 on `prod`), either onto an idle
node ("empty") or onto a node a burst job holds ("full": the burst job must be preempted and requeued
first). Latency is SLURM's own StartTime - SubmitTime, so the measurement does not include the
polling of this script. Rounds alternate so both sides see the same machine state.

With --scheduler pbs the same rounds run through qsub on OpenPBS (burst and prod queues, the node
chosen with `host=`); the latency is PBS's own stime - qtime. Run on the scheduler's host, as root.

Run as root on the lab:  .venv/bin/python bench/bench_preemption.py --rounds 10 [--scheduler pbs --node pcn1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from datetime import datetime

BURST_USER = "alice"
PROD_USER = "carol"  # PBS only (SLURM's production jobs are root's)
NODE = "n4"
BURST_CORES = 8  # PBS: the burst job's cores (at most the queue's per-user cap)


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


PBS = "/opt/pbs/bin/"


def pbs_job(job_id):
    return json.loads(run(PBS + "qstat", "-f", "-x", "-F", "json", job_id))["Jobs"][job_id]


def pbs_node_free():
    node = json.loads(run(PBS + "pbsnodes", "-F", "json", NODE))["nodes"][NODE]
    return node["state"] == "free" and not node.get("jobs")


def pbs_round(full, burst_exits_on_term):
    """one_round on PBS: stime - qtime of a production job on NODE, with or without a burst job there."""
    burst_id = None
    select = "select=1:ncpus=8:host=%s" % NODE  # production wants the whole node
    if full:
        script = "sleep 600" if burst_exits_on_term else "trap '' TERM; sleep 600"
        burst_select = "select=1:ncpus=%d:host=%s" % (BURST_CORES, NODE)
        burst_id = run(PBS + "qsub", "-q", "burst", "-r", "y", "-l", burst_select, "-j", "oe", "-o", "/dev/null",
                       "--", "/bin/sh", "-c", script, user=BURST_USER)
        wait(lambda: pbs_job(burst_id)["job_state"] == "R")
    # PBS runs no job as root (acl_roots is empty): production is a research user's.
    prod_id = run(PBS + "qsub", "-q", "prod", "-l", select, "-j", "oe", "-o", "/dev/null", "--", "/bin/sleep", "1",
                  user=PROD_USER)
    wait(lambda: "stime" in pbs_job(prod_id))
    info = pbs_job(prod_id)
    fmt = "%a %b %d %H:%M:%S %Y"
    latency = (datetime.strptime(" ".join(info["stime"].split()), fmt)
               - datetime.strptime(" ".join(info["qtime"].split()), fmt)).total_seconds()
    run(PBS + "qdel", "-W", "force", prod_id, *([burst_id] if burst_id else []))
    wait(pbs_node_free)
    return latency


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
    global NODE, BURST_CORES  # noqa: PLW0603 - the rounds' helpers read them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--stubborn", action="store_true",
                        help="burst jobs ignore SIGTERM and use their whole GraceTime")
    parser.add_argument("--scheduler", choices=("slurm", "pbs"), default="slurm")
    parser.add_argument("--node", default=NODE, help="the node both jobs run on (8 cores)")
    parser.add_argument("--burst-cores", type=int, default=BURST_CORES, help="PBS: the burst job's cores")
    args = parser.parse_args()
    NODE, BURST_CORES = args.node, args.burst_cores
    if args.scheduler == "pbs":
        rounds = pbs_round
        grace = run(PBS + "qmgr", "-c", "list queue burst kill_delay").split("=")[-1].strip()  # PBS's GraceTime
        wait(pbs_node_free)
    else:
        rounds = one_round
        grace = run("scontrol", "show", "partition", "burst", "--oneliner").split("GraceTime=")[1].split()[0]
        wait(node_idle)
    empty, full = [], []
    for i in range(args.rounds):
        empty.append(rounds(False, not args.stubborn))
        full.append(rounds(True, not args.stubborn))
        print("round %2d: empty %4.0fs  full %4.0fs" % (i + 1, empty[-1], full[-1]), flush=True)
    print()
    print("%s; burst GraceTime (PBS kill_delay): %ss; burst jobs %s SIGTERM"
          % (args.scheduler, grace, "ignore" if args.stubborn else "exit on"))
    print("%-28s %8s %8s" % ("production start latency", "median", "max"))
    print("%-28s %7.1fs %7.1fs" % ("burst partition empty", statistics.median(empty), max(empty)))
    print("%-28s %7.1fs %7.1fs" % ("burst partition full", statistics.median(full), max(full)))
    print("full - empty (median): %.1fs" % (statistics.median(full) - statistics.median(empty)))


if __name__ == "__main__":
    main()
