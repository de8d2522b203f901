"""Make live Dask schedulers Prometheus targets through file-based service discovery (file_sd).

Each live scheduler gets one JSON file in the site's targets directory (the site file's
``metrics-targets-dir``, from the site model's ``metrics.dask_targets_dir``; the
directory is world-writable with the sticky bit, like /tmp)::

    [{"targets": ["10.0.0.5:8787"],
      "labels": {"job": "dask", "user": "alice", "cluster_id": "Scheduler-...", "site": "lab",
                 "__meta_daskhpc_host": "login1", "__meta_daskhpc_pid": "4242"}}]

Prometheus scrapes Dask's own ``/metrics`` on the scheduler's dashboard port and notices new
or removed files at once (inotify). ``register`` is called when a cluster starts and
``unregister`` when it closes; files left by schedulers that died without closing are removed
by the next ``register`` on the same host (the process id no longer exists).
Discovery must never break a user's cluster: failures are logged and ``register`` returns None.
"""

from __future__ import annotations

import atexit
import getpass
import json
import logging
import os
import re
import socket
import tempfile
import urllib.parse

log = logging.getLogger("daskhpc.discovery")

DEFAULT_TARGETS_DIR = "/var/lib/daskhpc/dask-targets"
SUFFIX = ".json"


def targets_dir():
    """The targets directory: the site file's ``metrics-targets-dir`` (a policy key: users cannot move it)."""
    from daskhpc import config

    return config.policy().get("metrics-targets-dir") or DEFAULT_TARGETS_DIR


def _site():
    from daskhpc import config

    return str(config.policy().get("site") or "")


def scheduler_endpoint(cluster):
    """(cluster_id, "host:dashboard_port") of a Dask cluster (SpecCluster/LocalCluster/BurstCluster)
    or of a distributed Scheduler object."""
    info = getattr(cluster, "scheduler_info", None)
    if isinstance(info, dict) and info.get("address"):
        address, cluster_id = info["address"], info.get("id", "")
        port = (info.get("services") or {}).get("dashboard")
    else:  # a Scheduler object
        address, cluster_id = cluster.address, cluster.id
        port = cluster.http_server.port if getattr(cluster, "http_server", None) else None
    if not port:
        raise ValueError("the scheduler serves no dashboard, so there is no /metrics to scrape "
                         "(start it with a dashboard_address)")
    host = urllib.parse.urlsplit(address).hostname
    return cluster_id, "%s:%d" % (host, int(port))


def _safe(text):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def target_path(directory, cluster_id, user=None, host=None, pid=None):
    return os.path.join(directory, "%s-%s-%d-%s%s" % (
        _safe(user or getpass.getuser()), _safe(host or socket.gethostname()), pid or os.getpid(),
        _safe(cluster_id), SUFFIX))


def _write_atomic(path, data):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        # readable by Prometheus whatever the user's umask
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(directory=None):
    """Remove target files of schedulers on this host whose process has gone; return their paths."""
    directory = directory or targets_dir()
    host = socket.gethostname()
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.endswith(SUFFIX) or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as handle:
                labels = json.load(handle)[0]["labels"]
            if labels.get("__meta_daskhpc_host") != host or _pid_alive(int(labels["__meta_daskhpc_pid"])):
                continue
            os.unlink(path)
            removed.append(path)
        except (OSError, ValueError, LookupError, TypeError):
            # unreadable, someone else's file in the sticky directory, or removed meanwhile
            continue
    return removed


_registered = {}


def register(cluster, directory=None, user=None):
    """Write the file_sd target for `cluster`'s scheduler; return its path (None if not possible)."""
    directory = directory or targets_dir()
    try:
        cluster_id, endpoint = scheduler_endpoint(cluster)
        remove_stale(directory)
        user = user or getpass.getuser()
        host = socket.gethostname()
        path = target_path(directory, cluster_id, user=user, host=host)
        labels = {"job": "dask", "user": user, "cluster_id": cluster_id, "site": _site(),
                  "__meta_daskhpc_host": host, "__meta_daskhpc_pid": str(os.getpid())}
        _write_atomic(path, [{"targets": [endpoint], "labels": labels}])
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("could not register the Dask scheduler with Prometheus in %s: %s", directory, exc)
        return None
    _registered[cluster_id] = path
    return path


def unregister(cluster):
    """Remove `cluster`'s target file; safe to call twice or for a cluster never registered."""
    try:
        cluster_id, _ = scheduler_endpoint(cluster)
    except (ValueError, AttributeError):
        return
    path = _registered.pop(cluster_id, None)
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)


@atexit.register
def _unregister_all():
    # Interpreter exit without close(): leave no target behind.
    for path in list(_registered.values()):
        try:
            os.unlink(path)
        except OSError:
            pass
    _registered.clear()
