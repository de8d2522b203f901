"""SLURM source: one `squeue` and one `sinfo` per refresh, `sdiag` and `sacct` on a slower cadence.

Why these exact calls:

* ``--all`` on squeue and sinfo: without it an unprivileged user does not see partitions its
  groups may not use (AllowGroups), so the exporter's user would see an empty cluster.
* ``squeue --states=all`` so terminal states are counted (without it they read a constant 0),
  with a compact ``-o`` format of only the fields we use. Pending job arrays stay collapsed
  into one line (no ``-r``); the collector counts their tasks from the array expression, so a
  50,000-task array costs one line, not 50,000.
* ``sinfo -N`` (one line per node and partition) gives per-node cores allocated/idle/other,
  states and the time a node went down, in one call for the whole cluster.
* ``sdiag`` is one RPC; ``sacct`` talks to slurmdbd, not slurmctld, and reads a short,
  sliding window only (the collector asks incrementally).
"""

from __future__ import annotations

import re
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from daskhpc.core.site_model import expand_hostlist
from daskhpc.scheduler import BatchError
from daskhpc.scheduler.slurm import parse_timestamp

from daskhpc.exporter.source import BatchSource, ClusterState, Job, Node, Preemption

SEP = "|"
# job id (array expression included), partition, state, pending reason, user, cpus, node list
SQUEUE_FORMAT = SEP.join(["%i", "%P", "%T", "%r", "%u", "%C", "%N"])
# node, partition, partition availability, node state, cpus alloc/idle/other/total, reason time
SINFO_FORMAT = SEP.join(["%N", "%R", "%a", "%T", "%C", "%H"])
SACCT_FIELDS = "JobIDRaw,Partition,User,End,State"

_ARRAY_RE = re.compile(r"_\[([^\]]*)\]$")


def array_task_count(job_id):
    """How many jobs a squeue job id stands for: ``12_[1-1000%10]`` is 1000, ``12_3`` is 1."""
    match = _ARRAY_RE.search(job_id)
    if not match:
        return 1
    count = 0
    for part in match.group(1).split("%")[0].split(","):
        # `1-99:2` is a stepped range
        span, _sep, step = part.partition(":")
        lo, _sep, hi = span.partition("-")
        try:
            count += len(range(int(lo), int(hi or lo) + 1, int(step or 1)))
        except ValueError:
            count += 1
    return max(count, 1)


def _expand_nodes(expr):
    if not expr or expr in ("(null)", "None"):
        return []
    try:
        return expand_hostlist(expr)
    except ValueError:
        return [expr]


def short_reason(reason):
    """A pending reason fit for a label: slurmctld sometimes sends a sentence with job-specific
    details in parentheses ("Job's QOS not permitted to use this partition (burst allows ...)");
    keep the sentence, drop the details, so the label's values stay few."""
    return re.sub(r"\s*\(.*\)\s*$", "", reason.strip())[:64]


def parse_squeue(text):
    """Jobs from ``squeue -h -o SQUEUE_FORMAT`` output."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(SEP)
        if len(fields) != 7:
            raise BatchError("unexpected squeue line %r (want 7 fields separated by %r)" % (line, SEP),
                                   "bad_output")
        job_id, partition, state, reason, user, cpus, nodes = fields
        state = state.strip().lower()
        jobs.append(Job(
            partition=partition,
            state=state,
            user=user,
            cpus=int(cpus) if cpus.isdigit() else 0,
            reason=short_reason(reason) if state == "pending" else "",
            nodes=_expand_nodes(nodes) if state != "pending" else [],
            count=array_task_count(job_id),
        ))
    return jobs


def normalise_node_state(state):
    """``down*`` -> ``down``, ``idle~`` -> ``idle``, ``drained+maint`` -> ``drained``."""
    base = re.split(r"[+]", state.strip().lower(), maxsplit=1)[0]
    return base.rstrip("*~#!%$@^-") or "unknown"


def epoch_seconds(text):
    """SLURM's local-time timestamp as epoch seconds; None for Unknown/None."""
    when = parse_timestamp(text)
    return None if when is None else when.timestamp()


def parse_sinfo(text):
    """Nodes (merged across partitions) and partition availability from ``sinfo -h -N -o SINFO_FORMAT``."""
    nodes = {}
    partitions_up = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(SEP)
        if len(fields) != 6:
            raise BatchError("unexpected sinfo line %r (want 6 fields separated by %r)" % (line, SEP),
                                   "bad_output")
        name, partition, avail, state, cpus, since = fields
        partitions_up[partition] = avail.strip().lower() == "up"
        if name in nodes:
            nodes[name].partitions.append(partition)
            continue
        try:
            alloc, idle, other, total = (int(x) for x in cpus.split("/"))
        except ValueError as exc:
            raise BatchError("unexpected CPU counts %r in sinfo line %r" % (cpus, line), "bad_output") from exc
        node_state = normalise_node_state(state)
        nodes[name] = Node(
            name=name, partitions=[partition], state=node_state, cpus=total,
            cpus_allocated=alloc, cpus_idle=idle, cpus_other=other,
            unavailable_since=epoch_seconds(since),
        )
    return ClusterState(nodes=list(nodes.values()), jobs=[], partitions_up=partitions_up)


def parse_sacct_preemptions(text):
    """Preemption events from ``sacct -P -n -o SACCT_FIELDS`` output."""
    events = []
    for line in text.splitlines():
        fields = line.split(SEP)
        if len(fields) != 5 or not fields[4].upper().startswith("PREEMPTED"):
            continue
        job_id, partition, user, end, _state = fields
        when = epoch_seconds(end)
        if when is not None:
            events.append(Preemption(job_id=job_id, partition=partition, user=user, time=when))
    return events


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
_RPC_RE = re.compile(r"^\s*(\S+)\s*\(\s*\d+\)\s+count:(\d+)\s+ave_time:\d+\s+total_time:(\d+)")


def parse_sdiag(text):
    """``sdiag`` output to {'values': {(section, key): number}, 'rpc': {type: (count, total_us)}}."""
    section = ""
    values = {}
    rpc = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Main schedule statistics"):
            section = "main"
        elif stripped.startswith("Backfilling stats"):
            section = "backfill"
        elif stripped.startswith("Remote Procedure Call statistics by message type"):
            section = "rpc_type"
        elif stripped.startswith("Remote Procedure Call statistics by user"):
            section = "rpc_user"
        elif section == "rpc_type":
            match = _RPC_RE.match(line)
            if match:
                rpc[match.group(1)] = (int(match.group(2)), int(match.group(3)))
        elif ":" in stripped and section in ("", "main", "backfill"):
            key, _sep, value = stripped.partition(":")
            value = value.strip().split()[0] if value.strip() else ""
            if re.match(r"^-?\d+(\.\d+)?$", value):
                # top-level lines appear before the first section header
                values[(section, key.strip())] = float(value)
    return {"values": values, "rpc": rpc}


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
        jobs = parse_squeue(self.run("squeue", "--all", "--noheader", "--states=all", "-o", SQUEUE_FORMAT))
        state = parse_sinfo(self.run("sinfo", "--all", "--noheader", "-N", "-o", SINFO_FORMAT))
        state.jobs = jobs
        return state

    def read_preemptions(self, since, until):
        def stamp(epoch):
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))

        text = self.run("sacct", "--allusers", "--allocations", "--duplicates", "--noheader", "--parsable2",
                        "--state=PREEMPTED", "--starttime", stamp(since), "--endtime", stamp(until),
                        "--format", SACCT_FIELDS)
        return parse_sacct_preemptions(text)

    def read_health(self):
        return sdiag_metrics(parse_sdiag(self.run("sdiag")))
