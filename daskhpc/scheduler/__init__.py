"""What the batch system says about a cluster's jobs and about the whole cluster: the phases, the records,
the interface and the async runner.

One adapter per batch system lives beside this module (``slurm.py``, ``pbs.py``); the synchronous
runner for the CLI and the exporter is the core's :func:`daskhpc.core.command.run`.

dask-jobqueue never asks the batch system for job state, so it cannot tell a
pending job from a running one, nor notice jobs that were preempted, requeued
or ended at walltime. ``BatchSystem.query`` answers that for all of a
cluster's jobs with one call per poll (SLURM: one ``squeue``, plus one
``sacct`` only for jobs that have already left ``squeue``).
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from datetime import datetime

# Longest a batch command may take. A controller that does not answer within this is stuck, not slow:
# better a clear error (and the next poll) than a cluster that hangs.
COMMAND_TIMEOUT = 60

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
    # How many times the job has been started (PBS run_count); None where the query does not say.
    restarts: int | None = None

    @property
    def preempting(self):
        """Running, but told to end early: SLURM pulls the end time in to now + GraceTime on preemption."""
        if self.phase != RUNNING or not (self.start and self.end and self.time_limit_s):
            return False
        planned = (self.end - self.start).total_seconds()
        return planned < self.time_limit_s - 60


# What the exporter and the audit read of the whole cluster, in a vocabulary every batch system shares
# (so dashboards and alerts work everywhere):
#
# * node ``state``: lower-case base state without flag suffixes: ``idle``, ``mixed``, ``allocated``,
#   ``completing``, ``draining``, ``drained``, ``down``, ``reserved``, ``maint``, ``fail``, ``unknown``
#   (others pass through lower-cased);
# * job ``state``: lower-case, SLURM's long names (``pending``, ``running``, ``suspended``, ``completing``,
#   ``completed``, ``cancelled``, ``failed``, ``timeout``, ``preempted``, ``node_fail``, ``requeued``, ...);
#   PBS maps Q->pending, R->running, H->pending with a hold reason, S->suspended, E->completing,
#   F->completed;
# * job ``reason``: the scheduler's pending reason (``Resources``, ``Priority``, ``JobHeldUser``,
#   ``QOSMaxCpuPerUserLimit``, ...); empty for jobs that are not pending.

# Node states that mean "this node cannot take work"; alerts watch how long nodes stay in them.
UNAVAILABLE_NODE_STATES = ("down", "drained", "draining", "fail", "failing", "maint", "unknown")


@dataclass
class Node:
    name: str
    partitions: list
    state: str
    cpus: int
    cpus_allocated: int
    cpus_idle: int
    cpus_other: int
    # When the node became unavailable (epoch seconds), for down/drained nodes; None otherwise.
    unavailable_since: float | None = None


@dataclass
class Job:
    partition: str
    state: str
    user: str
    cpus: int
    reason: str = ""
    nodes: list = field(default_factory=list)
    # A pending job array is one record standing for `count` jobs.
    count: int = 1


@dataclass
class ClusterState:
    nodes: list
    jobs: list
    # partition name -> True when the partition accepts and runs jobs
    partitions_up: dict


@dataclass(frozen=True)
class Preemption:
    job_id: str
    partition: str
    user: str
    time: float


def parse_int(value, default=None):
    """A whole number as a batch command prints it (``8``, `` 8 ``, ``8(...)``); *default* for anything else."""
    try:
        return int(str(value).split("(", 1)[0])
    except ValueError:
        return default


#: why a batch system could not be read (:attr:`BatchError.reason`; the exporter's label ``reason`` of
#: ``daskhpc_source_up``, where "ok" means it was read and "skipped" that it was not asked)
REASONS = ("ok", "timeout", "failed", "not_found", "bad_output", "skipped", "budget")


class BatchError(RuntimeError):
    """The batch system could not be read; ``reason`` is one of :data:`REASONS`: ``timeout`` (no answer in
    time), ``failed`` (non-zero exit), ``not_found`` (no such command), ``bad_output`` (unparsable),
    ``budget`` (not run: the exporter's scrape had spent its time)."""

    def __init__(self, message, reason="failed"):
        super().__init__(message)
        self.reason = reason


class BatchSystem:
    """Interface: one query for many jobs. Subclasses say which commands and how to read them."""

    name = None
    # Environment variables the batch system's commands read as input (sbatch ranks SBATCH_* above
    # #SBATCH lines): dropped from every command's environment so that they cannot change policy.
    environment_prefixes = ()

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

    def command_environment(self):
        """This process's environment without the variables that would override policy."""
        return {key: value for key, value in os.environ.items() if not key.startswith(self.environment_prefixes)}

    async def run(self, command, timeout=None):
        """Run one of the batch system's commands (clean environment, timeout); its stdout, or BatchError."""
        return await _run(command, env=self.command_environment(), timeout=timeout)

    def release_command(self, job_ids):
        """Command that lets requeued jobs start as soon as nodes are free (None: nothing to do)."""
        return None

    async def release(self, job_ids):
        command = self.release_command([str(j) for j in job_ids]) if job_ids else None
        if command:
            await self.run(command)

    async def query(self, job_ids):
        """JobState for each known job id; ids the batch system does not know are left out."""
        job_ids = [str(j) for j in job_ids if j]
        if not job_ids:
            return {}
        states = self.parse_query(await self.run(self.query_command(job_ids)))
        missing = [j for j in job_ids if j not in states]
        command = self.history_command(missing) if missing else None
        if command:
            history = self.parse_history(await self.run(command))
            states.update({j: s for j, s in history.items() if j in missing})
        return states


def _kill_group(pid):
    # The command runs in its own session: kill whatever it started too, or their pipes keep us waiting.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run_command(command, env=None, timeout=None):
    """(returncode, stdout, stderr) of ``command``; BatchError when it is missing or does not answer in time."""
    timeout = COMMAND_TIMEOUT if timeout is None else timeout
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            start_new_session=True)
    except FileNotFoundError as exc:
        raise BatchError("%s not found: is the batch system's client installed here?" % command[0],
                         "not_found") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc.pid)
        await proc.communicate()
        raise BatchError("%s gave no answer within %g s: the batch system is overloaded or down (try `scontrol ping`); "
                         "nothing was waited for longer" % (" ".join(command), timeout), "timeout") from None
    return proc.returncode, out.decode(), err.decode()


async def _run(command, env=None, timeout=None):
    returncode, out, err = await run_command(command, env=env, timeout=timeout)
    if returncode != 0:
        raise BatchError("%s failed (exit %d): %s" % (" ".join(command), returncode, err.strip()))
    return out
