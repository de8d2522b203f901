"""SLURM for the cluster, the exporter and the audit: job phases, and SLURM's times and durations read once.

``SlurmBatch`` answers a cluster's job state with one ``squeue`` per poll (plus one ``sacct`` only for
jobs that have already left ``squeue``).
"""

from __future__ import annotations

from datetime import datetime

from daskhpc.core.site_model import parse_duration_minutes
from daskhpc.scheduler import ENDED, ENDING, PENDING, RUNNING, STUCK, SUSPENDED, BatchError, BatchSystem, JobState

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

SQUEUE_FORMAT = "%i|%T|%r|%S|%e|%l|%N"


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
                "--format=" + SQUEUE_FORMAT]

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
