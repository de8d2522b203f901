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
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

# Imported before forking, on purpose: the forked workers share it.
import distributed  # noqa: F401
from dask.utils import parse_timedelta
from distributed import Security, Worker

logger = logging.getLogger("daskhpc.worker")


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
    parser.add_argument("--dashboard", action="store_true", help="serve the worker's dashboard and /metrics")
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
        "dashboard": args.dashboard,
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
        kwargs["security"] = worker_security(args.tls_ca_file, args.tls_cert, args.tls_key)
    return {k: v for k, v in kwargs.items() if v is not None}


def worker_security(ca_file, cert, key):
    """The site's identity-bound TLS (only the cluster owner's certificate is accepted), else plain TLS."""
    try:
        from daskhpc.security import worker_security as identity_security
    except ImportError:
        return Security(tls_ca_file=ca_file, tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)
    return identity_security(ca_file, cert, key)


async def retire(worker, grace_time):
    """Hand data off and leave; if the scheduler cannot be reached in time, just close."""
    try:
        await asyncio.wait_for(worker.close_gracefully(reason="SIGTERM: preempted or at walltime"),
                               timeout=max(grace_time - 5, 5))
    except Exception as exc:  # the job is about to be killed: never die with data still unsaid
        logger.warning("graceful retirement failed (%s); closing", exc)
        await worker.close(reason="SIGTERM: graceful retirement failed")


async def run_worker(args, name):
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
    await worker.finished()
    if retiring:
        await retiring[0]
    return 0


def _run_one(args, name):
    try:
        return asyncio.run(run_worker(args, name))
    except Exception:
        logger.exception("worker %s failed", name)
        return 1


def _supervise(children):
    """Forward SIGTERM/SIGINT to the forked workers (``--signal=B:`` reaches only this process) and wait."""

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
    while remaining:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        status = status or os.waitstatus_to_exitcode(code)
    return status


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.nworkers <= 1:
        return _run_one(args, args.name)
    children = []
    for index in range(args.nworkers):
        pid = os.fork()
        if pid == 0:  # child: one worker, named like `dask worker --nworkers` names them
            os._exit(_run_one(args, "%s-%d" % (args.name, index)))
        children.append(pid)
    return _supervise(children)


if __name__ == "__main__":
    sys.exit(main())
