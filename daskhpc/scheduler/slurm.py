"""SLURM for the cluster, the exporter and the audit: job phases, the cluster's state, and SLURM's times and
durations read once.

``SlurmBatch`` answers a cluster's job state with one ``squeue`` per poll (plus one ``sacct`` only for
jobs that have already left ``squeue``). The exporter reads the whole cluster from one ``squeue`` and one
``sinfo`` (:func:`parse_squeue`, :func:`parse_sinfo`), preemptions from ``sacct``
(:func:`parse_sacct_preemptions`) and slurmctld's health from ``sdiag`` (:func:`parse_sdiag`). The audit
reads the partitions from ``scontrol --oneliner`` (:func:`parse_scontrol_partitions`); sacctmgr's and sacct's
``--parsable2`` rows are read by :func:`daskhpc.core.slurm.parsable2`, which the collection's sacctmgr
module shares.
"""

from __future__ import annotations

import re
from datetime import datetime

from daskhpc.core.site_model import expand_hostlist, parse_duration_minutes
from daskhpc.scheduler import (ENDED, ENDING, PENDING, RUNNING, STUCK, SUSPENDED, BatchError, BatchSystem, ClusterState,
                               Job, JobState, Node, Preemption)

SLURM_PHASES = {
    "PENDING": PENDING, "REQUEUED": PENDING, "REQUEUE_FED": PENDING, "CONFIGURING": PENDING,
    "RESIZING": PENDING, "RESV_DEL_HOLD": PENDING, "POWER_UP_NODE": PENDING,
    "RUNNING": RUNNING, "SIGNALING": RUNNING, "STAGE_OUT": ENDING, "COMPLETING": ENDING,
    "SUSPENDED": SUSPENDED, "STOPPED": SUSPENDED,
    "REQUEUE_HOLD": STUCK, "SPECIAL_EXIT": STUCK,
    "COMPLETED": ENDED, "CANCELLED": ENDED, "FAILED": ENDED, "TIMEOUT": ENDED, "NODE_FAIL": ENDED,
    "PREEMPTED": ENDED, "BOOT_FAIL": ENDED, "DEADLINE": ENDED, "OUT_OF_MEMORY": ENDED, "REVOKED": ENDED,
}

# Input variables of SLURM's commands. sbatch ranks SBATCH_* above #SBATCH lines (SBATCH_PARTITION,
# SBATCH_QOS, SBATCH_ACCOUNT, ...), SLURM_CONF and SLURM_CLUSTERS point at another controller, and
# SQUEUE_*/SACCT_*/SCANCEL_* change what the others report or act on: none of them may reach a command.
SLURM_ENV_PREFIXES = ("SBATCH_", "SLURM_", "SQUEUE_", "SACCT_", "SCANCEL_", "SCONTROL_", "SINFO_", "SACCTMGR_")

SQUEUE_JOB_STATE_FORMAT = "%i|%T|%r|%S|%e|%l|%N"


def parse_timestamp(text):
    """SLURM's local-time ``YYYY-MM-DDTHH:MM:SS`` (squeue, sinfo, sacct) as a naive datetime; None for
    Unknown, None, N/A, empty or anything else that is not a time."""
    try:
        return datetime.strptime((text or "").strip(), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def duration_seconds(text):
    """Seconds in a SLURM time limit ([D-]HH:MM:SS, MM:SS, MM); None for UNLIMITED, INVALID, N/A or junk."""
    try:
        minutes = parse_duration_minutes((text or "").strip())
    except ValueError:
        return None
    return None if minutes is None else round(minutes * 60)


def split_list(value):
    """A comma-separated SLURM list (AllowGroups, an association's QOS), sorted; empty for SLURM's
    spellings of "none" and for ``ALL`` (no restriction)."""
    if value in (None, "", "N/A", "(null)", "ALL"):
        return []
    return sorted(v for v in str(value).split(",") if v)


def parse_scontrol_partitions(text):
    """``scontrol show partition --oneliner``: one dict per partition, keyed by scontrol's names."""
    parts = []
    for line in text.splitlines():
        fields = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        if "PartitionName" in fields:
            parts.append(fields)
    return parts


def slurm_phase(state):
    # sacct writes e.g. "CANCELLED by 1000"
    word = (state or "").split()[0] if state else ""
    return SLURM_PHASES.get(word.rstrip("+"), ENDED if word else PENDING)


class SlurmBatch(BatchSystem):
    name = "slurm"
    environment_prefixes = SLURM_ENV_PREFIXES

    def __init__(self, squeue="squeue", sacct="sacct", scontrol="scontrol"):
        self.squeue = squeue
        self.sacct = sacct
        self.scontrol = scontrol

    def query_command(self, job_ids):
        # --states=all keeps jobs that ended within MinJobAge, so most endings need no sacct call.
        return [self.squeue, "--noheader", "--states=all", "--jobs=" + ",".join(job_ids),
                "--format=" + SQUEUE_JOB_STATE_FORMAT]

    def parse_query(self, text):
        states = {}
        for line in text.splitlines():
            fields = line.strip().split("|")
            if len(fields) < 7:
                continue
            job_id, state, reason, start, end, limit, nodes = fields[:7]
            states[job_id] = JobState(
                job_id=job_id, state=state, phase=slurm_phase(state),
                reason="" if reason in ("None", "(null)") else reason,
                start=parse_timestamp(start), end=parse_timestamp(end), time_limit_s=duration_seconds(limit),
                nodes=nodes)
        return states

    def history_command(self, job_ids):
        return [self.sacct, "--noheader", "--parsable2", "--allocations", "--duplicates",
                "--jobs=" + ",".join(job_ids), "--format=JobID,State,Reason,Start,End,Timelimit,NodeList"]

    def parse_history(self, text):
        # With --duplicates a requeued job has one line per run; the last one is the current run.
        return self.parse_query(text)

    async def query(self, job_ids):
        try:
            return await super().query(job_ids)
        except BatchError as exc:
            # squeue refuses the whole list when one id has left the controller; sacct knows them all.
            if "Invalid job id" not in str(exc):
                raise
            job_ids = [str(j) for j in job_ids if j]
            return self.parse_history(await self.run(self.history_command(job_ids)))

    def release_command(self, job_ids):
        # SLURM holds a requeued job back for about two minutes (reason BeginTime); its owner may lift that.
        return [self.scontrol, "update", "JobId=" + ",".join(job_ids), "StartTime=now"]


# --- the whole cluster, for the exporter ------------------------------------------------------------

SEP = "|"
# job id (array expression included), partition, state, pending reason, user, cpus, node list
SQUEUE_CLUSTER_FORMAT = SEP.join(["%i", "%P", "%T", "%r", "%u", "%C", "%N"])
# node, partition, partition availability, node state, cpus alloc/idle/other/total, reason time
SINFO_CLUSTER_FORMAT = SEP.join(["%N", "%R", "%a", "%T", "%C", "%H"])
SACCT_PREEMPTION_FIELDS = "JobIDRaw,Partition,User,End,State"

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
    """Jobs from ``squeue -h -o SQUEUE_CLUSTER_FORMAT`` output."""
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
    """Nodes (merged across partitions) and partition availability from ``sinfo -h -N -o SINFO_CLUSTER_FORMAT``."""
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
    """Preemption events from ``sacct -P -n -o SACCT_PREEMPTION_FIELDS`` output."""
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
