"""SLURM source: one `squeue` and one `sinfo` per refresh, `sdiag` and `sacct` on a slower cadence.

Why these exact calls:

* ``--all`` on squeue and sinfo: without it an unprivileged user does not see partitions its
  groups may not use (AllowGroups), so the exporter's user would see an empty cluster.
* ``squeue --states=all`` so terminal states are counted (without it they read a constant 0),
  with a compact ``-o`` format of only the fields we use (the formats and their parsers are SLURM's
  adapter's, :mod:`daskhpc.scheduler.slurm`). Pending job arrays stay collapsed
  into one line (no ``-r``); the collector counts their tasks from the array expression, so a
  50,000-task array costs one line, not 50,000.
* ``sinfo -N`` (one line per node and partition) gives per-node cores allocated/idle/other,
  states and the time a node went down, in one call for the whole cluster.
* ``sdiag`` is one RPC; ``sacct`` talks to slurmdbd, not slurmctld, and reads a short,
  sliding window only (the collector asks incrementally).
"""

from __future__ import annotations

import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from daskhpc.exporter.source import BatchSource
from daskhpc.scheduler.slurm import (SACCT_PREEMPTION_FIELDS, SINFO_CLUSTER_FORMAT, SQUEUE_CLUSTER_FORMAT,
                                     parse_sacct_preemptions, parse_sdiag, parse_sinfo, parse_squeue)

# sdiag line -> (metric suffix, help, scale to base units). Cycle times are in microseconds.
_SDIAG_GAUGES = {
    ("", "Server thread count"): ("server_threads", "slurmctld server threads in use", 1),
    ("", "Agent queue size"): ("agent_queue_size", "RPCs queued for slurmctld's agent", 1),
    ("", "Agent count"): ("agents", "slurmctld agents", 1),
    ("", "Agent thread count"): ("agent_threads", "slurmctld agent threads", 1),
    ("", "DBD Agent queue size"): ("dbd_agent_queue_size", "messages queued for slurmdbd", 1),
    ("", "Jobs pending"): ("jobs_pending", "pending jobs seen by slurmctld", 1),
    ("", "Jobs running"): ("jobs_running", "running jobs seen by slurmctld", 1),
    ("main", "Last cycle"): ("schedule_cycle_last_seconds", "last main scheduling cycle", 1e-6),
    ("main", "Max cycle"): ("schedule_cycle_max_seconds", "longest main scheduling cycle", 1e-6),
    ("main", "Mean cycle"): ("schedule_cycle_mean_seconds", "mean main scheduling cycle", 1e-6),
    ("main", "Last queue length"): ("schedule_queue_length", "queue length of the last main cycle", 1),
    ("backfill", "Last cycle"): ("backfill_cycle_last_seconds", "last backfill cycle", 1e-6),
    ("backfill", "Max cycle"): ("backfill_cycle_max_seconds", "longest backfill cycle", 1e-6),
    ("backfill", "Mean cycle"): ("backfill_cycle_mean_seconds", "mean backfill cycle", 1e-6),
    ("backfill", "Last depth cycle"): ("backfill_depth_last", "jobs considered in the last backfill cycle", 1),
}
_SDIAG_COUNTERS = {
    ("", "Jobs submitted"): ("jobs_submitted", "jobs submitted since the statistics reset"),
    ("", "Jobs started"): ("jobs_started", "jobs started since the statistics reset"),
    ("", "Jobs completed"): ("jobs_completed", "jobs completed since the statistics reset"),
    ("", "Jobs canceled"): ("jobs_canceled", "jobs cancelled since the statistics reset"),
    ("", "Jobs failed"): ("jobs_failed", "jobs failed since the statistics reset"),
    ("main", "Total cycles"): ("schedule_cycles", "main scheduling cycles since the statistics reset"),
    ("backfill", "Total cycles"): ("backfill_cycles", "backfill cycles since the statistics reset"),
}


def sdiag_metrics(parsed):
    """Metric families (``daskhpc_slurm_*``) from :func:`parse_sdiag`'s result."""
    families = []
    values = parsed["values"]
    for key, (suffix, text, scale) in _SDIAG_GAUGES.items():
        if key in values:
            families.append(GaugeMetricFamily("daskhpc_slurm_" + suffix, "sdiag: " + text, value=values[key] * scale))
    for key, (suffix, text) in _SDIAG_COUNTERS.items():
        if key in values:
            families.append(CounterMetricFamily("daskhpc_slurm_" + suffix, "sdiag: " + text, value=values[key]))
    calls = CounterMetricFamily("daskhpc_slurm_rpc_calls", "sdiag: RPCs served by message type since the "
                                "statistics reset", labels=["type"])
    spent = CounterMetricFamily("daskhpc_slurm_rpc_time_seconds", "sdiag: time slurmctld spent serving RPCs "
                                "by message type", labels=["type"])
    for rpc_type, (count, total_us) in sorted(parsed["rpc"].items()):
        calls.add_metric([rpc_type.lower()], count)
        spent.add_metric([rpc_type.lower()], total_us / 1e6)
    families += [calls, spent]
    return families


class SlurmSource(BatchSource):
    scheduler = "slurm"

    def __init__(self, config):
        super().__init__(config)
        self.bin_dir = config.get("slurm_bin_dir") or ""

    def read_state(self):
        jobs = parse_squeue(self.run("squeue", "--all", "--noheader", "--states=all", "-o", SQUEUE_CLUSTER_FORMAT))
        state = parse_sinfo(self.run("sinfo", "--all", "--noheader", "-N", "-o", SINFO_CLUSTER_FORMAT))
        state.jobs = jobs
        return state

    def read_preemptions(self, since, until):
        def stamp(epoch):
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))

        text = self.run("sacct", "--allusers", "--allocations", "--duplicates", "--noheader", "--parsable2",
                        "--state=PREEMPTED", "--starttime", stamp(since), "--endtime", stamp(until),
                        "--format", SACCT_PREEMPTION_FIELDS)
        return parse_sacct_preemptions(text)

    def read_health(self):
        return sdiag_metrics(parse_sdiag(self.run("sdiag")))
