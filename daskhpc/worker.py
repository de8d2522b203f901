"""Worker entry point for burst jobs: ``python -m daskhpc.worker SCHEDULER --name N ...``.

It takes the same options as ``dask worker`` (the ones dask-jobqueue writes
into job scripts) and differs in two ways that matter on a preemptible partition:

* SIGTERM (SLURM's preemption signal, GraceTime before SIGKILL; also the
  ``--signal`` warning before walltime) retires the worker gracefully: the
  scheduler moves its data to other workers and reschedules its tasks without
  counting them towards ``KilledWorker``. ``dask worker`` closes at once instead.
* ``--nworkers N`` forks N workers from one process that has already imported
  distributed, so a job pays for that import once instead of N times.

Workers run without a nanny: the job is the restart unit (requeued by the
batch system, replaced by ``BurstCluster``), and a nanny would close the worker
on SIGTERM before it could hand its data off.

It fails closed: where the site file says TLS is required, a worker without a
TLS scheduler address and credential refuses to start, and its TLS is always
bound to its own user (``daskhpc.security``), never the stock chain-only check.
A worker whose parent (the job step) disappears retires by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

# Imported before forking, on purpose: the forked workers share it.
import dask
from dask.utils import parse_timedelta
from distributed import Worker
from distributed.core import Status

from daskhpc import config as site
from daskhpc.security import worker_security

logger = logging.getLogger("daskhpc.worker")

# How often a worker checks that the process that started it (the job step) is still its parent.
PARENT_CHECK_INTERVAL = 5.0


class WorkerPolicyError(RuntimeError):
    """The worker's command line does not meet the site's policy; it must not start."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m daskhpc.worker", description=__doc__.splitlines()[0])
    parser.add_argument("scheduler")
    parser.add_argument("--name", required=True)
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--memory-limit", default="auto")
    parser.add_argument("--nworkers", type=int, default=1)
    parser.add_argument("--death-timeout", default=None)
    parser.add_argument("--local-directory", default=None)
    parser.add_argument("--interface", default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--protocol", default=None)
    parser.add_argument("--tls-ca-file", default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--lifetime", default=None)
    parser.add_argument("--lifetime-stagger", default="0 seconds")
    parser.add_argument("--preload", action="append", default=[])
    parser.add_argument("--resources", default=None)
    parser.add_argument("--grace-time", type=float, default=60,
                        help="seconds the batch system allows after SIGTERM; the hand-off must end inside it")
    return parser.parse_args(argv)


def worker_kwargs(args, name):
    """Keyword arguments for distributed.Worker from the command line."""
    kwargs = {
        "name": name,
        "nthreads": args.nthreads,
        "memory_limit": args.memory_limit,
        "local_directory": args.local_directory,
        "interface": args.interface,
        "host": args.host,
        "protocol": args.protocol,
        "preload": args.preload,
        # distributed starts an HTTP server in every worker, even without a dashboard. Compute hosts are
        # shared, so it serves only /health, on loopback: never the worker's /metrics or pages to anyone.
        "dashboard": False,
        "dashboard_address": "127.0.0.1:0",
    }
    if args.death_timeout is not None:
        kwargs["death_timeout"] = parse_timedelta(args.death_timeout)
    if args.lifetime:
        kwargs["lifetime"] = args.lifetime
        kwargs["lifetime_stagger"] = args.lifetime_stagger
    if args.resources:
        pairs = (item.split("=") for item in args.resources.replace(",", " ").split())
        kwargs["resources"] = {key: float(value) for key, value in pairs}
    if args.tls_cert or args.tls_ca_file:
        # Always bound to this process's user: there is no chain-only fallback.
        kwargs["security"] = worker_security(args.tls_ca_file, args.tls_cert, args.tls_key)
    return {k: v for k, v in kwargs.items() if v is not None}


def check_tls_policy(args, policy=None):
    """Raise WorkerPolicyError when the site requires TLS and the command line would not use it."""
    policy = site.policy() if policy is None else policy
    if site.tls_mode(policy) != "required":
        return
    missing = [option for option, value in (("--tls-ca-file", args.tls_ca_file), ("--tls-cert", args.tls_cert),
                                            ("--tls-key", args.tls_key)) if not value]
    if missing or not args.scheduler.startswith("tls://") or (args.protocol and not args.protocol.startswith("tls")):
        raise WorkerPolicyError(
            "the site requires TLS (tls.mode: required in %s), but this worker would connect to %s%s. Not "
            "starting. Fix: start workers through BurstCluster, which passes the scheduler's tls:// address and "
            "your credential" % (site.SITE_FILE, args.scheduler,
                                 " without %s" % ", ".join(missing) if missing else ""))


async def watch_parent(worker, parent, interval=PARENT_CHECK_INTERVAL):
    """Close ``worker`` once this process's parent (the job step) is gone: it would be a worker outside any job."""
    while worker.status not in (Status.closing, Status.closed, Status.failed):
        if os.getppid() != parent:
            logger.warning("the process that started this worker (pid %d) is gone: closing", parent)
            await worker.close(reason="the job step that started the worker is gone")
            return
        await asyncio.sleep(interval)


async def retire(worker, grace_time):
    """Hand data off and leave; if the scheduler cannot be reached in time, just close."""
    try:
        await asyncio.wait_for(worker.close_gracefully(reason="SIGTERM: preempted or at walltime"),
                               timeout=max(grace_time - 5, 5))
    except Exception as exc:  # the job is about to be killed: never die with data still unsaid
        logger.warning("graceful retirement failed (%s); closing", exc)
        await worker.close(reason="SIGTERM: graceful retirement failed")


async def run_worker(args, name, parent):
    worker = Worker(args.scheduler, **worker_kwargs(args, name))
    loop = asyncio.get_running_loop()
    retiring = []

    def on_signal(signum):
        if not retiring:
            logger.info("%s received %s: retiring gracefully", name, signal.Signals(signum).name)
            retiring.append(asyncio.ensure_future(retire(worker, args.grace_time)))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await worker
    watchdog = asyncio.ensure_future(watch_parent(worker, parent))
    await worker.finished()
    watchdog.cancel()
    if retiring:
        await retiring[0]
    return 0


def _run_one(args, name, parent):
    try:
        return asyncio.run(run_worker(args, name, parent))
    except Exception:
        logger.exception("worker %s failed", name)
        return 1


def _supervise(children, parent):
    """Forward SIGTERM/SIGINT to the forked workers (``--signal=B:`` reaches only this process) and wait.

    If this process's own parent (the job step) goes, the workers are told to retire as on SIGTERM.
    """

    def forward(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    remaining = set(children)
    orphaned = False
    while remaining:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if not orphaned and os.getppid() != parent:
                orphaned = True
                logger.warning("the process that started these workers (pid %d) is gone: retiring them", parent)
                forward(signal.SIGTERM, None)
            time.sleep(0.5)
            continue
        remaining.discard(pid)
        status = status or os.waitstatus_to_exitcode(code)
    return status


# What the worker's HTTP server may serve (distributed.worker.http.routes), whatever the user's config says.
WORKER_HTTP_ROUTES = ["distributed.http.health"]


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    dask.config.set({"distributed.worker.http.routes": WORKER_HTTP_ROUTES})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        check_tls_policy(args)
    except (WorkerPolicyError, site.NotConfigured) as exc:
        logger.error("%s", exc)
        return 2
    parent = os.getppid()
    if args.nworkers <= 1:
        return _run_one(args, args.name, parent)
    children = []
    for index in range(args.nworkers):
        pid = os.fork()
        if pid == 0:  # child: one worker, named like `dask worker --nworkers` names them; its parent is us
            os._exit(_run_one(args, "%s-%d" % (args.name, index), os.getppid()))
        children.append(pid)
    return _supervise(children, parent)


if __name__ == "__main__":
    sys.exit(main())
