"""Named clusters that outlive the terminal: ``daskhpc cluster start|list|stop`` and ``daskhpc.connect(name)``.

A named cluster is an ordinary BurstCluster (same policy, identity-bound TLS and preemption handling)
run by a detached process of the user's on the login host, in its own session, so a hang-up of the
terminal that started it does not reach it. Its record, ``~/.daskhpc/clusters/<name>.json`` (0600 in a
0700 directory), holds the scheduler's address and the dashboard link with its token; ``connect(name)``
reads it and connects with the user's own certificate, which is the only one the scheduler accepts.
The process's log is ``~/.daskhpc/logs/cluster-<name>.log``. Stopping it (SIGTERM) closes the cluster
as leaving a script would: workers retire, jobs are cancelled, the record goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from daskhpc.files import write_atomically

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
START_TIMEOUT = 180  # seconds to wait for the scheduler (and its TLS self-check) before giving up
STOP_TIMEOUT = 90    # seconds for workers to retire and jobs to be cancelled


class NamedClusterError(RuntimeError):
    """A named cluster cannot be started, found or stopped; the message says what to do."""


def home_directory(*parts):
    return os.path.join(os.path.expanduser("~"), ".daskhpc", *parts)


def private_directory(path):
    """``path`` as a directory only its owner can enter (made if missing, tightened if too open)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if info.st_uid != os.getuid() or not os.path.isdir(path) or os.path.islink(path):
        raise NamedClusterError("%s is not a directory of yours. Fix: remove it and try again." % path)
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def check_name(name):
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise NamedClusterError("cluster name %r: use 1-32 lower-case letters, digits and '-', starting with a "
                                "letter or digit (e.g. 'etl' or 'model-2')." % (name,))
    return name


def record_path(name):
    return os.path.join(home_directory("clusters"), check_name(name) + ".json")


def log_path(name):
    return os.path.join(home_directory("logs"), "cluster-%s.log" % check_name(name))


def write_record(name, record):
    """Write the record atomically, 0600, so a reader never sees half of it."""
    private_directory(home_directory("clusters"))
    write_atomically(record_path(name), json.dumps(record, indent=1, sort_keys=True))


def read_record(name):
    try:
        with open(record_path(name), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def _process_alive(record):
    """True when the record's process still runs (and is ours: a recycled PID is not taken for it)."""
    if record.get("host") != socket.gethostname():
        return None  # on another login host: not knowable from here
    try:
        with open("/proc/%d/cmdline" % int(record["pid"]), "rb") as handle:
            argv = handle.read().split(b"\0")
    except (OSError, ValueError, KeyError):
        return False
    return b"daskhpc.named" in argv and record.get("name", "").encode() in argv


def clusters():
    """Your named clusters: a list of records, each with ``state`` running, stale or elsewhere."""
    directory = home_directory("clusters")
    found = []
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if not entry.endswith(".json") or entry.startswith("."):
            continue
        record = read_record(entry[:-5])
        if record is None:
            continue
        alive = _process_alive(record)
        record["state"] = {True: "running", False: "stale", None: "on %s" % record.get("host")}[alive]
        found.append(record)
    return found


def connect(name, **client_kwargs):
    """A ``distributed.Client`` on your named cluster ``name``, over your identity-bound TLS."""
    from distributed import Client

    from daskhpc.security import cluster_security

    record = read_record(name)
    if record is None:
        raise NamedClusterError("no cluster named %r. `daskhpc cluster list` shows yours; `daskhpc cluster start "
                                "%s` starts one." % (name, name))
    if _process_alive(record) is False:
        raise NamedClusterError("cluster %r has stopped (its log: %s). Fix: `daskhpc cluster stop %s` to clear it, "
                                "then start it again." % (name, log_path(name), name))
    client_kwargs.setdefault("security", cluster_security())
    client_kwargs.setdefault("timeout", 30)
    return Client(record["address"], **client_kwargs)


# --- the detached process --------------------------------------------------------------------------------


def serve(name, options):
    """Run the cluster until SIGTERM or SIGINT; keep the record while it runs."""
    from daskhpc import BurstCluster

    stop = threading.Event()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that started us may hang up
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    workers = options.pop("workers", None)
    maximum = options.pop("maximum", None)
    cluster = BurstCluster(workers=workers, progress=False, job_name="dask-%s" % name, **options)
    try:
        if maximum is not None:
            cluster.adapt(minimum_jobs=0, maximum_jobs=maximum)
        write_record(name, {"name": name, "pid": os.getpid(), "host": socket.gethostname(),
                            "address": cluster.scheduler_address, "dashboard": cluster.dashboard_link,
                            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workers": workers,
                            "maximum": maximum, "log": log_path(name)})
        print("daskhpc: cluster %s running at %s" % (name, cluster.scheduler_address), flush=True)
        said = None
        while not stop.wait(5):
            if cluster.status_text() != said:  # the log tells each change once, not every 5 s
                said = cluster.status_text()
                print("%s %s" % (time.strftime("%H:%M:%S"), said), flush=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_path(name))
        cluster.close()
        print("daskhpc: cluster %s stopped" % name, flush=True)


def start(name, workers=None, maximum=None, python=None, walltime=None):
    """Start the detached process and wait until its scheduler is up; return its record."""
    check_name(name)
    existing = read_record(name)
    alive = _process_alive(existing) if existing is not None else False
    if alive is not False:
        raise NamedClusterError("cluster %r is already %s at %s. Fix: `daskhpc cluster stop %s` first, or pick "
                                "another name." % (name, "running" if alive else "on " + str(existing.get("host")),
                                                   existing["address"], name))
    if existing is not None:
        os.unlink(record_path(name))
    options = {k: v for k, v in (("workers", workers), ("maximum", maximum), ("python", python),
                                 ("walltime", walltime)) if v is not None}
    from daskhpc.cluster.base import private_log_directory  # the worker jobs' own checks, same directory

    private_log_directory(home_directory("logs"))
    log = log_path(name)
    with open(log, "ab") as handle:
        os.fchmod(handle.fileno(), 0o600)
        process = subprocess.Popen([sys.executable, "-m", "daskhpc.named", "_serve", name, json.dumps(options)],
                                   stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=os.path.expanduser("~"), close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        record = read_record(name)
        if record is not None and record.get("pid") == process.pid:
            return record
        if process.poll() is not None:
            raise NamedClusterError("cluster %r did not start (exit status %s). The end of its log, %s:\n%s"
                                    % (name, process.returncode, log, _tail(log)))
        time.sleep(0.5)
    process.terminate()
    raise NamedClusterError("cluster %r did not start within %d s. Its log: %s" % (name, START_TIMEOUT, log))


def stop(name):
    record = read_record(name)
    if record is None:
        raise NamedClusterError("no cluster named %r (`daskhpc cluster list` shows yours)." % name)
    alive = _process_alive(record)
    if alive is None:
        raise NamedClusterError("cluster %r runs on %s. Fix: run `daskhpc cluster stop %s` there."
                                % (name, record.get("host"), name))
    if alive:
        os.kill(int(record["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _process_alive(record) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _process_alive(record):
            raise NamedClusterError("cluster %r is still closing after %d s; its log: %s"
                                    % (name, STOP_TIMEOUT, log_path(name)))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(name))
    return alive


def _tail(path, lines=20):
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])
    return ""


# --- `daskhpc cluster ...` ---------------------------------------------------------------------------------


def _parser():
    parser = argparse.ArgumentParser(prog="daskhpc cluster", description="Named clusters that outlive your terminal.")
    commands = parser.add_subparsers(dest="command", required=True)
    begin = commands.add_parser("start", help="start a named cluster in the background")
    begin.add_argument("name")
    size = begin.add_mutually_exclusive_group()
    size.add_argument("--workers", type=int, help="a fixed number of workers")
    size.add_argument("--maximum", type=int, help="adapt between 0 and this many worker jobs")
    begin.add_argument("--python", help="the workers' interpreter (your venv made with `daskhpc venv`)")
    begin.add_argument("--walltime", help="each worker job's walltime, e.g. 01:00:00")
    commands.add_parser("list", help="your named clusters")
    end = commands.add_parser("stop", help="stop a named cluster: workers retire, jobs are cancelled")
    end.add_argument("name")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_serve"]:  # the detached process
        serve(check_name(argv[1]), json.loads(argv[2]))
        return 0
    args = _parser().parse_args(argv)
    try:
        if args.command == "start":
            record = start(args.name, workers=args.workers, maximum=args.maximum, python=args.python,
                           walltime=args.walltime)
            print("cluster %s: scheduler %s\n  dashboard: %s\n  connect:   from daskhpc import connect; client = "
                  "connect(%r)\n  stop:      daskhpc cluster stop %s\n  log:       %s"
                  % (args.name, record["address"], record["dashboard"], args.name, args.name, record["log"]))
        elif args.command == "list":
            found = clusters()
            if not found:
                print("no named clusters (start one with `daskhpc cluster start NAME`)")
            for record in found:
                print("%-16s %-10s %-28s started %s" % (record["name"], record["state"], record["address"],
                                                        record.get("started", "?")))
        else:
            print("cluster %s %s" % (args.name, "stopped" if stop(args.name) else "cleared (it had stopped)"))
    except NamedClusterError as exc:
        print("daskhpc cluster: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
