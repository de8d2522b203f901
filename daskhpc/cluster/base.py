"""``BurstCluster``: dask-jobqueue on the site's burst partition, inside policy and preemption-proof.

    from daskhpc import BurstCluster
    with BurstCluster(workers=16) as cluster, cluster.get_client() as client:
        ...

The design is dask-jobqueue's: one cluster class, and the batch system's part in the job class
(``job_cls``). ``BurstCluster`` is scheduler-neutral (policy, job-state sync, progress, TLS, discovery);
it takes the job class of the site's scheduler (``daskhpc.scheduler`` in the client configuration):
``daskhpc.cluster.slurm.BurstSLURMJob`` or ``daskhpc.cluster.pbs.BurstPBSJob``. A job class says how its
jobs are put inside policy (``policy_job_kwargs``, ``policy_directive_lines``, ``refused_field``,
``directive_prefix``) and read back (``batch_cls``). ``SlurmBurstCluster`` and ``PBSBurstCluster`` are
subclasses that fix the job class whatever the site says.

The client fails closed. The policy comes from the site file only (``daskhpc.config``); every job
script is checked as a whole just before it is submitted (``JobScriptRules``), whatever produced
it (arguments, dask-jobqueue's own ``jobqueue.*`` configuration, ...); batch commands run with a
clean environment and a timeout (``daskhpc.scheduler``); where the site requires TLS, only TLS bound to
the user's identity is accepted, and the scheduler proves at start that it refuses strangers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import re
import shlex
import stat
import sys
import warnings
from inspect import isawaitable
from time import time

import dask.config

from dask.utils import format_bytes, parse_bytes, parse_timedelta
from dask_jobqueue.core import JobQueueCluster
from distributed.core import Status
from distributed.deploy.adaptive import Adaptive
from distributed.deploy.cluster import Cluster
from distributed.protocol.pickle import dumps as pickle_dumps
from tornado.ioloop import PeriodicCallback

from daskhpc import config as site
from daskhpc import discovery, environment
from daskhpc.scheduler import ENDED, PENDING, RUNNING, STUCK, BatchError
from daskhpc.core.site_model import format_slurm_minutes, parse_duration_minutes
from daskhpc.cluster.owner_http import OwnerScheduler, dashboard_link
from daskhpc.cluster.progress import Progress, summarize
from daskhpc.security import IdentitySecurity, cluster_security, current_user, verify_scheduler_refuses_strangers

logger = logging.getLogger("daskhpc.cluster")

# After this many quick failures in a row (jobs that end before any worker connected)
# the cluster stops resubmitting: something is broken and resubmitting would flood the queue.
MAX_QUICK_FAILURES = 3
# At most one squeue call a second per cluster, whatever the user configures: the controller is shared.
MIN_POLL_INTERVAL = 1.0
DEFAULT_LOG_DIRECTORY = "~/.daskhpc/logs"
# dask-jobqueue keywords that would get round the checks here -> what to use instead.
BYPASSING_KWARGS = {
    "job_cpu": "cores=", "job_mem": "memory=",
    "header_skip": "job_directives_skip=", "env_extra": "job_script_prologue=", "job_extra": "job_extra_directives=",
}
# Batch phases in which a job has no business having connected workers.
NOT_RUNNING = (PENDING, ENDED, STUCK)
# How a job that never had a connected worker can end when its workers could not start (not preemption,
# cancellation or a node failure, which are no fault of the workers).
START_FAILURE_STATES = ("FAILED", "OUT_OF_MEMORY", "COMPLETED")
# A Python exception line at the end of a traceback, e.g. "ModuleNotFoundError: No module named 'x'".
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt))(:.*)?$")


class PolicyError(ValueError):
    """A request beyond the site's burst policy, refused before anything reaches the batch system."""


class LogDirectoryError(PermissionError):
    """The job log directory is not the user's own private directory."""


class WorkerStartError(RuntimeError):
    """Worker jobs end before any worker connects; raised for the tasks waiting for workers."""


def start_failure_cause(text):
    """The line of a job's error log that says why its workers did not start, or None.

    The last exception of a traceback first (the worker's own failure), then the last logged error,
    then the batch system's own words (e.g. slurmstepd's "oom_kill event").
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern in (EXCEPTION_LINE, re.compile(r" (ERROR|CRITICAL) |^slurmstepd: error|oom", re.IGNORECASE)):
        for line in reversed(lines):
            if pattern.search(line):
                return line[-500:]
    return lines[-1][-500:] if lines else None


class BurstPolicy:
    """The site's burst rules as the client sees them (the scheduler's QOS remains the real guard)."""

    def __init__(self, config):
        limits = config.get("limits") or {}
        self.site = config.get("site")
        self.partition = config["partition"]
        self.qos = config["qos"]
        self.account = config["account"]
        self.contact = site.contact(config)
        self.max_walltime_minutes = parse_duration_minutes(config.get("max-walltime") or "04:00:00")
        self.grace_time = int(config.get("grace-time") or 0)
        self.max_cores_per_user = limits.get("max-cores-per-user")
        self.max_jobs_per_user = limits.get("max-jobs-per-user")
        self.max_cores_per_job = limits.get("max-cores-per-job")
        memory = limits.get("max-memory-per-job")
        self.max_memory_per_job = parse_bytes(memory) if isinstance(memory, str) else memory

    def refuse(self, what, limit):
        return PolicyError(
            "%s: %s. This is the %s site's burst policy; ask %s if you need more."
            % (what, limit, self.site or "this", self.contact))

    def check_job(self, cores, memory, walltime_minutes, processes):
        if processes < 1 or processes > cores:
            raise PolicyError("processes=%d must be between 1 and cores=%d (each worker needs a core)"
                              % (processes, cores))
        if self.max_cores_per_job and cores > self.max_cores_per_job:
            raise self.refuse("cores=%d per job is too many" % cores,
                              "the largest burst node has %d cores" % self.max_cores_per_job)
        if self.max_cores_per_user and cores > self.max_cores_per_user:
            raise self.refuse("cores=%d per job is too many" % cores,
                              "at most %d burst cores per user" % self.max_cores_per_user)
        if self.max_memory_per_job and memory > self.max_memory_per_job:
            raise self.refuse("memory=%s per job is too much" % format_bytes(memory),
                              "the largest burst node has %s" % format_bytes(self.max_memory_per_job))
        if self.max_walltime_minutes and walltime_minutes > self.max_walltime_minutes:
            raise self.refuse("walltime=%s is too long" % format_slurm_minutes(walltime_minutes),
                              "burst jobs may run at most %s" % format_slurm_minutes(self.max_walltime_minutes))

    def max_jobs(self, cores_per_job):
        limits = [self.max_jobs_per_user]
        if self.max_cores_per_user:
            limits.append(self.max_cores_per_user // cores_per_job)
        limits = [n for n in limits if n]
        return min(limits) if limits else math.inf

    def check_jobs(self, jobs, cores_per_job, processes):
        if jobs > self.max_jobs(cores_per_job):
            most = self.max_jobs(cores_per_job)
            raise self.refuse(
                "%d workers (%d jobs of %d cores) is too many" % (jobs * processes, jobs, cores_per_job),
                "at most %d burst cores and %s jobs per user, so at most %d workers of this size"
                % (self.max_cores_per_user or 0, self.max_jobs_per_user or "unlimited", most * processes))

    def refuse_directive(self, where, line, field):
        return PolicyError(
            "%s %r would change the %s: burst jobs always run with partition %s, QOS %s and account %s, and take "
            "cores, memory, walltime and log files from BurstCluster's arguments (the site's burst policy). "
            "Remove it; ask %s for other resources."
            % (where, str(line), field, self.partition, self.qos, self.account, self.contact))

    def check_directives(self, lines, refused_field, prefix, where):
        """Refuse directives that would change what the policy fixes (``refused_field``: text -> field or None)."""
        for line in lines or []:
            text = str(line).strip()
            if text.startswith("#"):
                if not text.startswith(prefix):
                    continue
                text = text[len(prefix):]
            elif where == "job_script_prologue":
                continue  # a command, not a directive
            field = refused_field(text)
            if field:
                raise self.refuse_directive(where, line, field)


def directive_tokens(text):
    """A directive's words as the shell would split them (whitespace when the quoting is broken)."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def refused_option_field(text, options, flags):
    """The policy field that the options in ``text`` would set, or None.

    ``options`` maps options to fields; ``flags`` are the short options that take no argument.
    Catches ``-p prod``, ``-pprod``, bundles such as ``-Hp prod``, ``--partition=prod``,
    ``--partition prod`` and abbreviations such as ``--part`` (the batch system accepts any
    unambiguous abbreviation, and refuses ambiguous ones anyway).
    """
    for token in directive_tokens(text):
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            for option, field in options.items():
                if len(name) > 2 and option.startswith("--") and option.startswith(name):
                    return field
        elif token.startswith("-"):
            for letter in token[1:]:
                field = options.get("-" + letter)
                if field:
                    return field
                if letter not in flags:
                    break  # an option with an argument: the rest of the token is its value
    return None


def directive_lines(script, prefix):
    """The lines the batch system reads as directives: those starting with ``prefix`` before the first command."""
    found = []
    for line in script.splitlines():
        text = line.strip()
        if text.startswith(prefix):
            found.append(text)
        elif text and not text.startswith("#"):
            break
    return found


class JobScriptRules:
    """What every burst job script must say and may not say, checked on the script itself.

    ``required``: the policy's own directive lines, which must all be there; no other directive line
    may touch what they fix (``refused_field``). Checked when a job is made and again on the file
    handed to the batch system, so no setting of dask-jobqueue's can slip past the argument checks.
    """

    def __init__(self, policy, prefix, required, refused_field):
        self.policy = policy
        self.prefix = prefix
        self.required = list(required)
        self.refused_field = refused_field

    def check(self, script):
        directives = directive_lines(script, self.prefix)
        for line in self.required:
            if line not in directives:
                raise PolicyError(
                    "the job script lacks %r, which the burst policy needs (job_directives_skip, or "
                    "jobqueue.*.job-directives-skip / header-skip in your Dask configuration, removed it). "
                    "Remove that setting; ask %s if you need other resources." % (line, self.policy.contact))
        for line in directives:
            if line not in self.required:
                field = self.refused_field(line[len(self.prefix):])
                if field:
                    raise self.policy.refuse_directive("the job script's directive", line, field)


def private_log_directory(path):
    """The worker jobs' log directory, created 0700 and checked to be the user's own and private.

    Job logs carry tracebacks and data, so they go neither to the working directory (often shared)
    nor to a directory that anyone else controls or can read.
    """
    path = os.path.expanduser(str(path or DEFAULT_LOG_DIRECTORY))
    if not os.path.isabs(path) or any(char.isspace() for char in path):
        raise LogDirectoryError("job log directory %r must be an absolute path without spaces (default %s)"
                                % (path, DEFAULT_LOG_DIRECTORY))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):  # lstat: a symbolic link is not a directory here
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory"
        raise LogDirectoryError("job log directory %s is %s, not a directory of your own. Fix: remove it "
                                "(BurstCluster then creates it, mode 0700)" % (path, what))
    if info.st_uid != os.geteuid():
        raise LogDirectoryError("job log directory %s belongs to uid %d, not to you (uid %d): others could read or "
                                "replace your job logs. Fix: remove it, or set daskhpc.log-directory to a directory "
                                "of your own" % (path, info.st_uid, os.geteuid()))
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise LogDirectoryError("job log directory %s is open to others (mode %04o). Fix: chmod 700 %s"
                                % (path, stat.S_IMODE(info.st_mode), path))
    return path


# SLURM checks --signal times once a minute: "the signal may be sent up to 60 seconds earlier than
# specified" (sbatch(1)). Workers retire that much before it, so the signal stays a safety net.
SIGNAL_RESOLUTION = 60


def lifetime_args(walltime_minutes, grace_time):
    """``--lifetime`` and ``--lifetime-stagger`` so workers retire (handing off data) before walltime.

    Returns (args, margin_seconds): the margin is also when SLURM's ``--signal`` fires as a safety net.
    The last worker retires at walltime - margin - SIGNAL_RESOLUTION, before the earliest such signal.
    """
    walltime = walltime_minutes * 60
    margin = int(min(max(walltime * 0.05, grace_time + 60), 600))
    stagger = int(min(walltime * 0.05, 300))
    lifetime = max(int(walltime - margin - SIGNAL_RESOLUTION - stagger), 60)
    return ["--lifetime", "%ds" % lifetime, "--lifetime-stagger", "%ds" % stagger], margin


def worker_python(python, site_python):
    """The workers' interpreter: the site's, or the user's own environment built on it.

    Unless it is this very interpreter, it is asked for its versions first (``daskhpc.environment``): workers
    whose Dask differs from the client's fail late and obscurely, so such a cluster does not start.
    """
    chosen = os.path.abspath(os.path.expanduser(str(python))) if python else site_python
    if chosen != sys.executable:
        environment.check(chosen, site_python)
    return chosen


class BurstAdaptive(Adaptive):
    """``Adaptive`` that scales within policy, and asks for no more jobs once workers are known not to start."""

    async def scale_up(self, n):
        if self.cluster._gave_up:
            return
        result = self.cluster._scale_within_policy(n)
        if isawaitable(result):
            await result


class BurstJobMixin:
    """Scheduler-neutral part of a burst job: an exec'd ``daskhpc.worker`` and policy-safe submission.

    A batch system's job class adds what only it knows: ``batch_cls`` (reads job state), ``directive_prefix``
    and the policy hooks below.
    """

    batch_cls = None
    directive_prefix = None

    def __init__(self, *args, burst_rules, **kwargs):
        super().__init__(*args, **kwargs)  # the batch system's dask-jobqueue job class, next in the MRO
        self._burst_init(burst_rules)

    @staticmethod
    def policy_job_kwargs(policy, *, walltime_minutes, signal_margin, cores, memory, log_directory):
        """Job keyword arguments that put the job on the burst partition/QOS/account;
        ``job_extra_directives`` holds the policy's own extra directives only."""
        raise NotImplementedError

    @staticmethod
    def policy_directive_lines(job_kwargs, cores, memory):
        """Header lines dask-jobqueue writes that the policy needs (``job_directives_skip`` may not drop them)."""
        return []

    @staticmethod
    def refused_field(text):
        """The policy field a directive (without its prefix) would change, or None."""
        raise NotImplementedError

    @staticmethod
    def error_log(log_directory, job_id):
        """The path of a job's stderr log, or None when the batch system names it itself."""
        return None

    @staticmethod
    def refuse_cluster_kwargs(kwargs):
        """Refuse (PolicyError) cluster keyword arguments this batch system's policy sets itself."""

    def _burst_init(self, rules):
        # exec: the worker becomes the job's main process, so the batch system's signals reach it.
        if not self._command_template.startswith("exec "):
            self._command_template = "exec " + self._command_template
        self.burst_rules = rules
        rules.check(self.job_script())
        self.batch_state = None
        self.last_phase = None
        self.ever_ran = False
        self.restarts = None  # the batch system's start count when last polled (PBS run_count)
        self.retiring = False
        self.missing_polls = 0
        self.submitted_at = None

    async def _submit_job(self, script_filename):
        with open(script_filename, encoding="utf-8") as handle:
            self.burst_rules.check(handle.read())  # exactly what the batch system is about to read
        self.submitted_at = time()
        # BatchSystem.run: no SBATCH_*/SLURM_*/PBS_* variables that could override the script, and a timeout.
        return await self.batch_cls().run(shlex.split(self.submit_command) + [script_filename])

    @classmethod
    async def _close_job(cls, job_id, cancel_command):
        if job_id:
            try:
                await cls.batch_cls().run(shlex.split(cancel_command) + [job_id])
            except BatchError as exc:  # usually: the job has already gone
                logger.info("could not cancel job %s: %s", job_id, exc)


class BurstClusterBase:
    """Policy, job-state sync, progress, TLS and discovery; mixed into dask-jobqueue's cluster class."""

    def __init__(self, workers=None, *, cores=None, memory=None, processes=None, walltime=None,
                 job_extra_directives=None, job_script_prologue=None, job_directives_skip=None,
                 worker_extra_args=None, security=None, scheduler_options=None, progress=None,
                 log_directory=None, python=None, **kwargs):
        # The policy comes from the site file only (daskhpc.config): no argument can replace it.
        cfg = site.require_site(site.site_config())
        self.site_config = cfg
        if "job_cls" in kwargs:
            raise PolicyError("job_cls: the site's scheduler picks the job class (or use SlurmBurstCluster or "
                              "PBSBurstCluster). Remove the argument.")
        self.job_cls = getattr(type(self), "job_cls", None) or cluster_class().job_cls
        self.policy = policy = BurstPolicy(cfg)
        self._refuse_policy_kwargs(kwargs)
        self.job_cls.refuse_cluster_kwargs(kwargs)
        self._refuse_plaintext_options(cfg, scheduler_options, kwargs)
        security = self._burst_security(cfg, security)

        processes = int(processes or cfg.get("workers-per-job") or 1)
        if cores is None:
            cores = processes * int(cfg.get("worker-cores") or 1)
        processes = min(processes, int(cores))
        if memory is None:
            memory = format_bytes(processes * parse_bytes(cfg.get("worker-memory") or "2GiB")).replace(" ", "")
        walltime_minutes = parse_duration_minutes(walltime or cfg.get("walltime") or cfg.get("max-walltime"))
        policy.check_job(int(cores), parse_bytes(memory), walltime_minutes, processes)
        for where, lines in (("job_extra_directives", job_extra_directives),
                             ("job_script_prologue", job_script_prologue)):
            policy.check_directives(lines, self.refused_field, self.directive_prefix, where)

        lifetime, margin = lifetime_args(walltime_minutes, policy.grace_time)
        worker_args = ["--grace-time", str(policy.grace_time)] + lifetime + list(worker_extra_args or [])
        if processes > 1:
            worker_args = ["--nworkers", str(processes)] + worker_args
        self.log_directory = private_log_directory(log_directory or cfg.get("log-directory"))
        self.worker_python = worker_python(python, cfg.get("python"))
        job_kwargs = self.job_cls.policy_job_kwargs(policy, walltime_minutes=walltime_minutes, signal_margin=margin,
                                                    cores=int(cores), memory=parse_bytes(memory),
                                                    log_directory=self.log_directory)
        policy_extras = job_kwargs["job_extra_directives"]
        header = self.job_cls.policy_directive_lines(job_kwargs, int(cores), parse_bytes(memory))
        self._check_skips(job_directives_skip, header)
        job_kwargs["job_extra_directives"] = policy_extras + list(job_extra_directives or [])
        required = header + ["%s %s" % (self.directive_prefix, line) for line in policy_extras]
        job_kwargs["burst_rules"] = JobScriptRules(policy, self.directive_prefix, required, self.refused_field)

        self.batch = self.job_cls.batch_cls()
        show = cfg.get("progress", True) if progress is None else progress
        self.progress = Progress(enabled=bool(show))
        self.requeues = 0
        self.replaced = 0
        self._quick_failures = 0
        self.start_failure = None  # why the last worker job ended before any of its workers connected
        self._gave_up = None       # set when resubmission stopped after repeated start failures
        self._warned_no_workers = False
        # No size given: adapt within policy, so a first computation gets workers (started in _start).
        self._adapt_by_default = workers is None
        self._sync_callback = None
        self._discovery_path = None
        self._closing = set()  # names of workers being retired or closed right now

        scheduler_options = dict(scheduler_options or {})
        # OwnerScheduler keeps only the port: the dashboard listens on loopback behind a token, and
        # /metrics over mutual TLS (daskhpc.cluster.owner_http).
        scheduler_options.setdefault("dashboard_address", cfg.get("dashboard-address") or ":0")
        scheduler_options.setdefault("dashboard", True)
        if kwargs.pop("scheduler_cls", OwnerScheduler) is not OwnerScheduler:
            raise PolicyError("scheduler_cls: burst clusters always run daskhpc's OwnerScheduler, whose dashboard "
                              "and /metrics only you can reach. Remove the argument.")

        kwargs["python"] = self.worker_python
        kwargs.setdefault("interface", cfg.get("interface"))
        try:
            super().__init__(
                cores=int(cores), memory=memory, processes=processes,
                worker_command="daskhpc.worker", worker_extra_args=worker_args,
                job_script_prologue=list(job_script_prologue or []),
                job_directives_skip=list(job_directives_skip or []),
                security=security,
                scheduler_options=scheduler_options,
                scheduler_cls=OwnerScheduler,
                job_cls=self.job_cls, config_name=self.job_cls.config_name,
                **job_kwargs, **kwargs)
        except Exception:
            # A start that failed (e.g. the TLS self-check) must not leave the event loop's thread behind.
            runner = getattr(self, "_loop_runner", None)
            if runner is not None and not self.asynchronous:
                runner.stop()
            raise
        if workers:
            self.scale(workers)

    # --- the batch system's part: its job class's ------------------------------------------------

    @property
    def directive_prefix(self):
        return self.job_cls.directive_prefix

    def refused_field(self, text):
        return self.job_cls.refused_field(text)

    @property
    def _dummy_job(self):
        try:
            return super()._dummy_job
        except PolicyError:
            if self.status == Status.created:
                self.status = Status.closed  # refused before anything started: nothing to close
            raise

    # --- policy ----------------------------------------------------------------------------

    def _refuse_policy_kwargs(self, kwargs):
        fixed = {"queue": self.policy.partition, "account": self.policy.account, "qos": self.policy.qos,
                 "project": self.policy.account}
        for key, value in fixed.items():
            if key in kwargs:
                given = kwargs.pop(key)
                if given not in (None, value):
                    raise PolicyError(
                        "%s=%r: burst jobs always run with partition %s, QOS %s and account %s "
                        "(the site's burst policy). Remove it; ask %s for other resources."
                        % (key, given, self.policy.partition, self.policy.qos, self.policy.account,
                           self.policy.contact))
        for key, instead in BYPASSING_KWARGS.items():
            if kwargs.get(key) is not None:
                raise PolicyError("%s=%r is not accepted: use %s, which the site's burst policy checks; ask %s if "
                                  "you need more" % (key, kwargs[key], instead, self.policy.contact))
            kwargs.pop(key, None)

    def _check_skips(self, skips, header):
        for line in header:
            for skip in skips or []:
                if skip and skip in line:
                    raise PolicyError("job_directives_skip %r would drop %r, which the burst policy needs; "
                                      "ask %s if you need other resources" % (skip, line, self.policy.contact))

    def _policy_max_workers(self):
        job = self._dummy_job
        return self.policy.max_jobs(job.worker_cores) * job.worker_processes

    def scale(self, n=None, jobs=0, memory=None, cores=None):
        """Ask for ``n`` workers (or ``jobs`` jobs, ``cores``, ``memory``): a fixed size, so adaptivity stops."""
        if self._adaptive is not None:
            self._adaptive.stop(reason="scale() asks for a fixed size")
            self._adaptive = None
        self._gave_up = None  # the user acts: try again
        self._quick_failures = 0
        return self._scale_within_policy(n=n, jobs=jobs, memory=memory, cores=cores)

    def _scale_within_policy(self, n=None, jobs=0, memory=None, cores=None):
        job = self._dummy_job
        wanted = jobs or 0
        if n is not None:
            wanted = max(wanted, math.ceil(n / job.worker_processes))
        if cores is not None:
            wanted = max(wanted, math.ceil(cores / job.worker_cores))
        if memory is not None:
            wanted = max(wanted, math.ceil(parse_bytes(memory) / job.worker_memory))
        self.policy.check_jobs(wanted, job.worker_cores, job.worker_processes)
        return super().scale(n=n, jobs=jobs, memory=memory, cores=cores)

    def adapt(self, *args, minimum_jobs=None, maximum_jobs=None, idle_timeout=None, **kwargs):
        """dask-jobqueue's ``adapt`` within policy. ``idle_timeout`` (default ``daskhpc.adapt-idle``, 3 minutes):
        how long workers must have been surplus before they are given back (dask-jobqueue #701): on a
        partition with a queue, giving workers back seconds after the work ends means queueing again for the
        next step."""
        job = self._dummy_job
        most = self._policy_max_workers()
        idle = parse_timedelta(idle_timeout or self.site_config.get("adapt-idle") or "180s")
        interval = parse_timedelta(kwargs.get("interval") or dask.config.get("distributed.adaptive.interval"))
        # Adaptive retires a worker after it was surplus in wait_count consecutive checks, one per interval.
        kwargs.setdefault("wait_count", max(1, math.ceil(idle / interval)))
        kwargs.setdefault("Adaptive", BurstAdaptive)
        self._gave_up = None
        self._quick_failures = 0
        if maximum_jobs is not None:
            kwargs["maximum"] = maximum_jobs * job.worker_processes
        maximum = kwargs.get("maximum", args[1] if len(args) > 1 else None)
        if maximum is None or maximum == math.inf:
            kwargs["maximum"] = most
        elif maximum > most:
            self.policy.check_jobs(math.ceil(maximum / job.worker_processes), job.worker_cores,
                                   job.worker_processes)
        if minimum_jobs is not None:
            kwargs["minimum"] = minimum_jobs * job.worker_processes
        return super().adapt(*args, **kwargs)

    # --- TLS -------------------------------------------------------------------------------

    def _burst_security(self, cfg, security):
        """The cluster's Security. Where the site requires TLS, only TLS bound to the user's identity is accepted."""
        required = site.tls_mode(cfg) == "required"
        paths = site.tls_paths(cfg)
        if security is None:
            if all(paths.get(key) and os.path.exists(paths[key]) for key in ("cert", "key")):
                return cluster_security(paths=paths)
            if required:
                raise site.NotConfigured(
                    "the site requires TLS, but your credential is missing (%s, %s). Fix: run `daskhpc doctor`; "
                    "credentials are issued to data-science users by the site's PKI - ask %s."
                    % (paths.get("cert"), paths.get("key"), site.contact(cfg)))
            return None
        if required and not _bound_to_user(security):
            raise PolicyError(
                "security=%r: the %s site requires TLS bound to your identity (tls.mode: required in %s), and this %s, "
                "so someone other than you could connect to your scheduler and run code as you. Fix: leave security "
                "out; BurstCluster then uses your site certificate (%s). `daskhpc doctor` checks it; ask %s if it is "
                "missing." % (security, cfg.get("site") or "this", site.SITE_FILE,
                              "turns TLS off" if security is False else "is not the site's identity-bound TLS",
                              paths.get("cert"), site.contact(cfg)))
        return security or None

    def _refuse_plaintext_options(self, cfg, scheduler_options, kwargs):
        """Where TLS is required, no option may replace the scheduler's security or protocol."""
        if site.tls_mode(cfg) != "required":
            return
        for key in ("security", "protocol"):
            if key in (scheduler_options or {}):
                raise PolicyError("scheduler_options[%r] would replace the scheduler's identity-bound TLS, which the "
                                  "site requires. Fix: remove it" % key)
        protocol = kwargs.get("protocol")
        if protocol is not None and not str(protocol).startswith("tls"):
            raise PolicyError("protocol=%r: the site requires TLS (tls://). Fix: remove protocol=" % protocol)

    # --- lifecycle ------------------------------------------------------------------------

    async def _start(self):
        await super()._start()
        if isinstance(self.security, IdentitySecurity):
            # Before any job is submitted: a scheduler that would let a stranger in must not run at all.
            try:
                await verify_scheduler_refuses_strangers(self.scheduler, self.security.owner)
            except BaseException:
                await self._close()
                raise
        interval = max(parse_timedelta(self.site_config.get("poll-interval") or "3s"), MIN_POLL_INTERVAL) * 1000
        self._sync_callback = PeriodicCallback(self._sync_jobs, interval)
        self._sync_callback.start()
        self._discovery_path = _discovery("register", self)
        if self._adapt_by_default and self._adaptive is None:
            self.adapt()
        self._update_progress()  # say what the cluster will do now, not at the first poll

    async def _close(self):
        if self._sync_callback is not None:
            self._sync_callback.stop()
        _discovery("unregister", self)
        if self.status == Status.running and self.scheduler_comm is not None:
            # Let workers leave before the scheduler goes: otherwise it closes under their open streams.
            names = [w["name"] for w in (getattr(self, "scheduler_info", None) or {}).get("workers", {}).values()]
            if names:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.scheduler_comm.retire_workers(names=names, close_workers=True, remove=True), 10)
        await super()._close()
        if getattr(self, "progress", None) is not None:  # not the last count, which is no longer true
            self.progress.update("closed: its workers have left and its jobs are cancelled")

    def _update_worker_status(self, op, msg):
        # SpecCluster cancels a job once its worker has been gone for a while. A requeued job's worker is
        # gone too, and cancelling would lose the requeue: the batch-state sync owns the jobs' lifecycle.
        Cluster._update_worker_status(self, op, msg)
        if op == "add":
            self._note_connected(self._connected_worker_names())
        self._update_progress()  # every arrival and departure, not only at the next poll

    def _note_connected(self, connected):
        """Remember which jobs have had a worker connected: a job that ends without one failed to start."""
        for name, job in list(self.workers.items()):
            if any(worker in connected for worker in self._job_worker_names(name)):
                job.had_workers = True

    # --- job-state sync (dask-jobqueue #643, #691, #11) -------------------------------------

    def _job_worker_names(self, name):
        spec = self.worker_spec.get(name) or {}
        return [str(name) + suffix for suffix in spec.get("group", [])] or [name]

    async def _sync_jobs(self):
        if self.status != Status.running:
            return
        jobs = {name: job for name, job in list(self.workers.items()) if getattr(job, "job_id", None)}
        try:
            states = await self.batch.query([job.job_id for job in jobs.values()])
        except BatchError as exc:
            self.progress.update("%s; the batch system is not answering: %s" % (self._worker_count(), exc))
            return
        except Exception:  # never let the periodic callback die
            logger.exception("job-state sync failed")
            return
        if self.status != Status.running:
            return  # closed while squeue ran
        self._note_connected(self._connected_worker_names())
        to_replace, to_retire, to_release = self.classify(jobs, states)
        ghosts = [name for name in self.ghost_workers(jobs) if name not in self._closing]
        if ghosts:
            asyncio.ensure_future(self._close_ghosts(ghosts))
        if to_release:
            try:
                await self.batch.release([self.workers[name].job_id for name in to_release])
            except BatchError as exc:
                logger.info("could not release requeued jobs early: %s", exc)
        for name in to_retire:
            self.workers[name].retiring = True
            asyncio.ensure_future(self._retire(name))
        if to_replace:
            self._replace(to_replace)
        self._update_progress()

    def classify(self, jobs, states):
        """Decide from the batch system's view which jobs to replace, whose workers to retire now,
        and which requeued jobs to release from their post-requeue hold."""
        to_replace, to_retire, to_release = [], [], []
        for name, job in jobs.items():
            state = states.get(str(job.job_id))
            job.batch_state = state
            if state is None:
                # Not yet visible right after submission; gone from squeue and sacct after that.
                job.missing_polls += 1
                if job.missing_polls >= 5:
                    to_replace.append(name)
                continue
            job.missing_polls = 0
            if state.phase == RUNNING:
                job.ever_ran = True
            self._note_requeue(job, state)
            job.last_phase = state.phase
            if state.phase == PENDING and state.reason == "BeginTime" and job.ever_ran:
                to_release.append(name)
            if state.phase in (ENDED, STUCK):
                to_replace.append(name)
            elif state.preempting and not job.retiring:
                to_retire.append(name)
        return to_replace, to_retire, to_release

    def _note_requeue(self, job, state):
        """Count a job that went back to the queue since the last poll (before its last_phase moves on)."""
        if job.last_phase == RUNNING and state.phase == PENDING:
            self.requeues += 1  # preempted and requeued: it restarts by itself when nodes are free
            job.retiring = False
            logger.info("job %s was requeued (%s)", job.job_id, state.reason or state.state)
        elif (job.last_phase == RUNNING and state.phase == RUNNING and state.restarts is not None
              and getattr(job, "restarts", None) is not None and state.restarts > job.restarts):
            # Requeued and started again between two polls (PBS reruns a requeued job at once when
            # another node has room): only the start count shows it.
            self.requeues += 1
            job.retiring = False
            logger.info("job %s was requeued and has started again (run %d)", job.job_id, state.restarts)
        if state.restarts is not None:
            job.restarts = state.restarts

    def ghost_workers(self, jobs):
        """Connected workers whose batch job is not running (gone, ended, requeued, pending, held).

        Such a worker lives outside any allocation the batch system knows of; it must go.
        """
        connected = self._connected_worker_names()
        ghosts = []
        for name, job in jobs.items():
            state = job.batch_state
            if state is None or state.phase in NOT_RUNNING:
                ghosts += [worker for worker in self._job_worker_names(name) if worker in connected]
        return ghosts

    async def _close_ghosts(self, names):
        logger.warning("workers %s are connected but their batch job is not running: closing them", names)
        await self._retire_workers(names)

    async def _retire(self, name):
        """Hand off the data of a job being preempted while its GraceTime runs."""
        names = self._job_worker_names(name)
        logger.info("job of %s is being preempted: retiring its workers gracefully", names)
        await self._retire_workers(names)

    async def _retire_workers(self, names):
        """Move the workers' data elsewhere, then close them (their processes exit)."""
        self._closing.update(names)
        try:
            await self.scheduler_comm.retire_workers(names=names, close_workers=True, remove=True)
        except Exception as exc:
            logger.warning("could not retire %s: %s", names, exc)
        finally:
            self._closing.difference_update(names)

    def new_worker_spec(self):
        """SpecCluster's next job, under a name never used before in this cluster.

        SpecCluster reuses a name once its entry is gone, so a replacement would take the name of the job it
        replaces. Names stay unique so that one name means one job in the logs, and the scheduler never
        refuses a new worker whose name a leaving one still holds.
        """
        spec = super().new_worker_spec()
        self._i += 1
        return spec

    def _replace(self, names):
        """Forget ended jobs and submit fresh ones, so the requested size holds."""
        for name in names:
            job = self.workers.pop(name, None)
            state = getattr(job, "batch_state", None)
            if state is not None and state.phase == STUCK:
                self._futures.add(asyncio.ensure_future(job.close()))  # held by the system: cancel it
            if job is not None and getattr(job, "had_workers", False):
                self._quick_failures = 0
            elif job is not None and state is not None and state.state.split()[0].rstrip("+") in START_FAILURE_STATES:
                self._quick_failures += 1
                self.start_failure = self.describe_start_failure(job.job_id, state)
                logger.error("%s", self.start_failure)
                self.progress.update(self.start_failure)
            if name not in self.worker_spec:
                continue  # scaled down meanwhile: nothing to restore
            logger.info("job %s of %s ended (%s): submitting a replacement", getattr(job, "job_id", "?"), name,
                        state.state if state else "gone")
            if self._quick_failures >= MAX_QUICK_FAILURES:
                del self.worker_spec[name]
                self._gave_up = (
                    "%d worker jobs in a row ended before any worker started; not resubmitting. Last: %s. Fix the "
                    "cause, then call cluster.scale() or cluster.adapt() again; `daskhpc doctor` checks the set-up"
                    % (self._quick_failures, self.start_failure))
                self.progress.update(self._gave_up)
                continue
            del self.worker_spec[name]
            self.worker_spec.update(self.new_worker_spec())
            self.replaced += 1
        self.loop.add_callback(self._correct_state)

    def error_log(self, job_id):
        return self.job_cls.error_log(self.log_directory, job_id)

    def describe_start_failure(self, job_id, state):
        """"worker job 12 failed (FAILED) before any worker connected: <cause> (log: <path>)"."""
        path = self.error_log(job_id)
        cause = None
        if path:
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    cause = start_failure_cause(handle.read()[-65536:])
            except OSError:
                cause = None
        if state.state.startswith("OUT_OF_MEMORY"):
            cause = "out of memory: its workers needed more than the job's memory. Ask for more with memory=, or " \
                    "fewer workers per job with processes="
        return "worker job %s ended (%s) before any worker connected: %s (log: %s)" % (
            job_id, state.state, cause or "no cause in its log", path or self.log_directory)

    def _fail_waiting_tasks(self):
        """With no worker left and none coming, fail the tasks waiting for one with the reason, so the user's
        compute() raises WorkerStartError where they look instead of waiting for ever."""
        scheduler = self.scheduler
        if not self._gave_up or getattr(scheduler, "workers", True):
            return
        waiting = list(scheduler.unrunnable) + list(scheduler.queued)
        if not waiting:
            return
        exception = pickle_dumps(WorkerStartError(self._gave_up))
        stimulus = "daskhpc-worker-start-failed-%f" % time()
        recommendations = {}
        for task in waiting:
            recommendations.update(scheduler.transition(task.key, "erred", exception=exception, cause=task.key,
                                                        stimulus_id=stimulus))
        scheduler.transitions(recommendations, stimulus_id=stimulus)

    def _waiting_tasks(self):
        scheduler = self.scheduler
        try:
            return len(scheduler.unrunnable) + len(scheduler.queued)
        except (AttributeError, TypeError):
            return 0

    # --- progress -------------------------------------------------------------------------

    def _connected_workers(self):
        # The scheduler runs in this process: its own count is exact, where scheduler_info lags behind.
        workers = getattr(getattr(self, "scheduler", None), "workers", None)
        if isinstance(workers, dict):
            return len(workers)
        try:
            return len(self.scheduler_info["workers"])
        except (AttributeError, KeyError, TypeError):
            return 0

    def _connected_worker_names(self):
        try:
            return {str(worker.get("name")) for worker in self.scheduler_info["workers"].values()}
        except (AttributeError, KeyError, TypeError):
            return set()

    def _worker_count(self):
        return "%d/%d workers" % (self._connected_workers(), len(self.plan))

    def _update_progress(self):
        if self.status != Status.running:
            return
        states = [getattr(job, "batch_state", None) for job in self.workers.values()]
        states += [None] * len(set(self.worker_spec) - set(self.workers))
        adaptive = self._adaptive
        maximum = adaptive.maximum if adaptive is not None and adaptive.state in ("starting", "running") else None
        waiting = self._waiting_tasks()
        connected = self._connected_workers()
        if self._gave_up and not connected:
            self._fail_waiting_tasks()
            self.progress.update(self._gave_up)
            return
        self.progress.update(summarize(connected, len(self.plan), states, adaptive_maximum=maximum, waiting=waiting))
        if waiting and not self.plan and maximum is None and not self._warned_no_workers:
            self._warned_no_workers = True
            logger.warning("%s", self.progress.text)

    @property
    def dashboard_link(self):
        """The dashboard on this host's loopback, with the session's token (see docs/data-scientists.md
        for reaching it from a laptop through ``ssh -L``)."""
        scheduler = getattr(self, "scheduler", None)
        if isinstance(scheduler, OwnerScheduler) and scheduler.http_server is not None:
            return dashboard_link(scheduler)
        return super().dashboard_link

    def status_text(self):
        """The current progress line, e.g. "8/16 workers, 8 jobs pending: Resources"."""
        return self.progress.text

    def _repr_html_(self, cluster_status=None):
        return super()._repr_html_(cluster_status=self.progress.html() + (cluster_status or ""))


def _discovery(action, cluster):
    """Register with Prometheus discovery; a failure only warns (the cluster works without being scraped)."""
    try:
        return getattr(discovery, action)(cluster)
    except Exception as exc:
        warnings.warn("Prometheus discovery %s failed: %s" % (action, exc), stacklevel=2)
        return None


def _bound_to_user(security):
    """True for identity-bound TLS that accepts only the current user's certificate and refuses plaintext."""
    return (isinstance(security, IdentitySecurity) and security.owner == current_user()
            and bool(security.require_encryption) and bool(security.tls_ca_file)
            and bool(security.tls_scheduler_cert) and bool(security.tls_client_cert))


class BurstCluster(BurstClusterBase, JobQueueCluster):
    """A Dask cluster on the site's burst partition. ``BurstCluster(workers=16)``; see docs/data-scientists.md.

    The job class (dask-jobqueue's ``job_cls``) is the site's scheduler's (``daskhpc.scheduler``); the
    subclasses ``SlurmBurstCluster`` and ``PBSBurstCluster`` fix it instead.
    """


# The cluster class of each batch system, by the site model's scheduler name.
SCHEDULER_CLASSES = {"slurm": "daskhpc.cluster.slurm:SlurmBurstCluster", "pbs": "daskhpc.cluster.pbs:PBSBurstCluster"}


def cluster_class(scheduler=None):
    """The cluster class of a scheduler (default: the site's); its ``job_cls`` is that batch system's."""
    scheduler = scheduler or site.policy().get("scheduler") or "slurm"
    target = SCHEDULER_CLASSES.get(scheduler)
    if target is None:
        raise site.NotConfigured("daskhpc.scheduler=%r is not supported (use one of: %s)"
                                 % (scheduler, ", ".join(SCHEDULER_CLASSES)))
    module, _sep, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
