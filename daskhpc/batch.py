"""What the batch system says about a cluster's jobs.

dask-jobqueue never asks the batch system for job state, so it cannot tell a
pending job from a running one, nor notice jobs that were preempted, requeued
or ended at walltime. ``BatchSystem.query`` answers that for all of a
cluster's jobs with one call per poll (SLURM: one ``squeue``, plus one
``sacct`` only for jobs that have already left ``squeue``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime

# Job phases the cluster acts on; every scheduler maps its states onto these.
PENDING = "pending"      # queued (also: requeued after preemption, waiting to run again)
RUNNING = "running"
ENDING = "ending"        # leaving the node (SLURM COMPLETING)
ENDED = "ended"          # gone for good: must be replaced to keep the requested size
STUCK = "stuck"          # held by the system (requeue hold, special exit): cancel and replace
SUSPENDED = "suspended"


@dataclass
class JobState:
    job_id: str
    state: str                 # the scheduler's own word, e.g. PENDING, PREEMPTED
    phase: str                 # one of the phases above
    reason: str = ""           # pending reason, e.g. Resources, Priority, QOSMaxCpuPerUserLimit
    start: datetime | None = None
    end: datetime | None = None
    time_limit_s: int | None = None
    nodes: str = ""

    @property
    def preempting(self):
        """Running, but told to end early: SLURM pulls the end time in to now + GraceTime on preemption."""
        if self.phase != RUNNING or not (self.start and self.end and self.time_limit_s):
            return False
        planned = (self.end - self.start).total_seconds()
        return planned < self.time_limit_s - 60


class BatchError(RuntimeError):
    """The batch system could not be asked (not reachable, command missing)."""


class BatchSystem:
    """Interface: one query for many jobs. Subclasses say which commands and how to read them."""

    name = None

    def query_command(self, job_ids):
        raise NotImplementedError

    def parse_query(self, text):
        """dict job_id -> JobState for every job in the output."""
        raise NotImplementedError

    def history_command(self, job_ids):
        """Command for jobs that already left the live queue (None when there is none)."""
        return None

    def parse_history(self, text):
        return {}

    def submit_environment(self):
        """The environment for submission commands, without variables that would override policy."""
        return dict(os.environ)

    def release_command(self, job_ids):
        """Command that lets requeued jobs start as soon as nodes are free (None: nothing to do)."""
        return None

    async def release(self, job_ids):
        command = self.release_command([str(j) for j in job_ids]) if job_ids else None
        if command:
            await _run(command)

    async def query(self, job_ids):
        """JobState for each known job id; ids the batch system does not know are left out."""
        job_ids = [str(j) for j in job_ids if j]
        if not job_ids:
            return {}
        states = self.parse_query(await _run(self.query_command(job_ids)))
        missing = [j for j in job_ids if j not in states]
        command = self.history_command(missing) if missing else None
        if command:
            history = self.parse_history(await _run(command))
            states.update({j: s for j, s in history.items() if j in missing})
        return states

    def query_sync(self, job_ids):
        return asyncio.run(self.query(job_ids))


async def _run(command):
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError as exc:
        raise BatchError("%s not found: is the batch system's client installed here?" % command[0]) from exc
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BatchError("%s failed (exit %d): %s" % (" ".join(command), proc.returncode, err.decode().strip()))
    return out.decode()


def run_sync(command, timeout=30):
    """Run a batch command for the CLI (doctor); returns (returncode, stdout, stderr)."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return 127, "", "%s: command not found" % command[0]
    except subprocess.TimeoutExpired:
        return 124, "", "%s: no answer within %d s" % (command[0], timeout)
    return proc.returncode, proc.stdout, proc.stderr


# --- SLURM ---------------------------------------------------------------------

SLURM_PHASES = {
    "PENDING": PENDING, "REQUEUED": PENDING, "REQUEUE_FED": PENDING, "CONFIGURING": PENDING,
    "RESIZING": PENDING, "RESV_DEL_HOLD": PENDING, "POWER_UP_NODE": PENDING,
    "RUNNING": RUNNING, "SIGNALING": RUNNING, "STAGE_OUT": ENDING, "COMPLETING": ENDING,
    "SUSPENDED": SUSPENDED, "STOPPED": SUSPENDED,
    "REQUEUE_HOLD": STUCK, "SPECIAL_EXIT": STUCK,
    "COMPLETED": ENDED, "CANCELLED": ENDED, "FAILED": ENDED, "TIMEOUT": ENDED, "NODE_FAIL": ENDED,
    "PREEMPTED": ENDED, "BOOT_FAIL": ENDED, "DEADLINE": ENDED, "OUT_OF_MEMORY": ENDED, "REVOKED": ENDED,
}

# Variables that sbatch ranks above #SBATCH lines: left in the environment they would move
# jobs off the burst partition, QOS or account behind the job script's back.
SLURM_POLICY_ENV = ("SBATCH_PARTITION", "SBATCH_QOS", "SBATCH_ACCOUNT", "SBATCH_CLUSTERS",
                    "SLURM_CLUSTERS", "SBATCH_RESERVATION")

SQUEUE_FORMAT = "%i|%T|%r|%S|%e|%l|%N"


def _slurm_time(text):
    text = (text or "").strip()
    if not text or text in ("N/A", "Unknown", "None"):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def _slurm_duration_s(text):
    """Seconds in SLURM's [D-]HH:MM:SS / MM:SS; None for UNLIMITED or junk."""
    text = (text or "").strip()
    if not text or text.upper() in ("UNLIMITED", "INVALID", "N/A"):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def slurm_phase(state):
    # sacct writes e.g. "CANCELLED by 1000"
    word = (state or "").split()[0] if state else ""
    return SLURM_PHASES.get(word.rstrip("+"), ENDED if word else PENDING)


class SlurmBatch(BatchSystem):
    name = "slurm"

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
                start=_slurm_time(start), end=_slurm_time(end), time_limit_s=_slurm_duration_s(limit),
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
            return self.parse_history(await _run(self.history_command(job_ids)))

    def release_command(self, job_ids):
        # SLURM holds a requeued job back for about two minutes (reason BeginTime); its owner may lift that.
        return [self.scontrol, "update", "JobId=" + ",".join(job_ids), "StartTime=now"]

    def submit_environment(self):
        env = dict(os.environ)
        for key in SLURM_POLICY_ENV:
            env.pop(key, None)
        return env
