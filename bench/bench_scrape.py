"""Scrape latency of the daskhpc exporter with 1,000, 10,000 and 50,000 jobs queued on the lab.

Jobs are held job arrays (`sbatch --hold --array=1-N`), cancelled afterwards. For each size,
in one run and alternating, it times:

* exporter      - one full scrape as Prometheus gets it (squeue + sinfo, parse, build every
                  metric, render the text format), cache disabled so every scrape asks SLURM;
* exporter -r   - the same with `squeue -r`: one line per array task, i.e. the cost the
                  exporter would pay if the N jobs were N separate jobs rather than an array;
* naive json    - the common alternative: `squeue --json` and `sinfo --json` every scrape,
                  decoded and counted by partition and state (SLURM 22.05's --json ignores -r:
                  a pending array is one record there too, so this variant counts it as 1 job);
* per-call      - the older exporters' pattern: one `squeue -r` per partition and state and one
                  `sinfo` per partition (9 calls on the lab).

It prints medians and the ratios to the exporter. Needs root (submits and cancels jobs) and the
lab's SLURM (MaxJobCount=200000, MaxArraySize=100001). Run it when nobody else is testing:
    .venv/bin/python bench/bench_scrape.py [--sizes 1000,10000,50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry, generate_latest

from daskhpc.exporter.collectors import BatchCollector
from daskhpc.exporter.slurm import SlurmSource
from daskhpc.scheduler.slurm import SQUEUE_CLUSTER_FORMAT, parse_squeue

CONFIG = {"burst_partitions": ["burst"], "production_partitions": ["prod", "bigmem"], "burst_max_share_ratio": 0.5,
          "burst_max_cores": 24, "min_interval_seconds": 0, "slow_interval_seconds": 1e9}


class ExpandedSlurmSource(SlurmSource):
    """The exporter's source with array tasks expanded (`squeue -r`)."""

    def read_state(self):
        jobs = parse_squeue(self.run("squeue", "--all", "--noheader", "--states=all", "-r",
                                     "-o", SQUEUE_CLUSTER_FORMAT))
        state = super().read_state()
        state.jobs = jobs
        return state


def exporter_scrape(source_class):
    collector = BatchCollector(source_class(CONFIG), CONFIG)
    collector.last_slow_attempt = time.time()  # sdiag/sacct run once a minute, not per scrape
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def scrape():
        text = generate_latest(registry).decode()
        assert "daskhpc_up 1.0" in text, "the exporter could not read SLURM"
        return text

    return scrape


def naive_json_scrape():
    jobs = json.loads(subprocess.run(["squeue", "--all", "--json"], capture_output=True, text=True,
                                     check=True).stdout)["jobs"]
    nodes = json.loads(subprocess.run(["sinfo", "--all", "--json"], capture_output=True, text=True,
                                      check=True).stdout)["nodes"]
    counts = collections.Counter((job.get("partition"), job.get("job_state")) for job in jobs)
    cores = sum(node.get("cpus", 0) for node in nodes)
    return counts, cores


def per_call_scrape():
    """The per-call pattern of older exporters: one squeue per partition and state, one sinfo per partition."""
    counts = {}
    for partition in ("prod", "bigmem", "burst"):
        for state in ("PD", "R"):
            counts[(partition, state)] = len(run("squeue", "--all", "--noheader", "-r", "-p", partition, "-t", state,
                                                 "-o", "%i").splitlines())
        counts[(partition, "cores")] = run("sinfo", "--noheader", "-p", partition, "-o", "%C")
    return counts


def timed(func, repeat):
    times = []
    for _round in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return times


def run(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout.strip()


def queued_jobs():
    return len(run("squeue", "--all", "--noheader", "-r", "-t", "PD,R", "-o", "%i").splitlines())


def records():
    """Job records squeue -r --states=all lists: queued ones plus those finished within MinJobAge
    (cancelled arrays of a previous size stay listed for MinJobAge, 300 s on the lab)."""
    return len(run("squeue", "--all", "--noheader", "-r", "--states=all", "-o", "%i").splitlines())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    config = run("scontrol", "show", "config")
    print("\n".join(line for line in config.splitlines() if line.startswith(("MaxJobCount", "MaxArraySize"))))
    variants = [("exporter", exporter_scrape(SlurmSource)), ("exporter -r", exporter_scrape(ExpandedSlurmSource)),
                ("naive json", naive_json_scrape), ("per-call", per_call_scrape)]
    print("%8s %8s %8s | %s" % ("jobs", "queued", "records", " | ".join("%-22s" % name for name, _scrape in variants)))
    rows = []
    leftover = records()
    if leftover > 1000:
        print("note: %d finished job records are still listed (they age out after MinJobAge)" % leftover)
    # Sizes are reached by adding arrays, all cancelled at the end: cancelling a held array turns
    # it into one record per task for MinJobAge, so cancelling per size would pile up records
    # (1,000 + 10,000 + 50,000 of them) towards MaxJobCount while other tests share slurmctld.
    job_ids = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            missing = size - sum(n for _job_id, n in job_ids)
            if missing > 0:
                job_ids.append((run("sbatch", "--parsable", "--hold", "-p", "prod", "--array=1-%d" % missing,
                                    "-o", "/dev/null", "--wrap", "true").split(";")[0], missing))
            queued, listed = queued_jobs(), records()
            results = {name: [] for name, _scrape in variants}
            for _round in range(args.repeat):  # alternate so load changes hit every variant alike
                for name, func in variants:
                    results[name] += timed(func, 1)
            medians = {name: statistics.median(times) for name, times in results.items()}
            rows.append((size, medians))
            base = medians["exporter"]
            print("%8d %8d %8d | %s" % (size, queued, listed, " | ".join(
                "%7.3f s (x%6.1f)     " % (medians[name], medians[name] / base) for name, _scrape in variants)))
            sys.stdout.flush()
    finally:
        if job_ids:
            run("scancel", *(job_id for job_id, _count in job_ids))
    goal = rows[-1][1]["exporter"]
    print("goal: exporter scrape under 1 s at %d jobs: %s (%.3f s)" % (rows[-1][0], "met" if goal < 1 else
                                                                       "NOT met", goal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
