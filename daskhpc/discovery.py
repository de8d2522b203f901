"""Register live Dask schedulers for Prometheus: one small file per scheduler on its login host.

Each live scheduler gets one JSON file in the login host's targets directory (the site file's
``metrics-targets-dir``, from the site model's ``metrics.dask_targets_dir``; the
directory is world-writable with the sticky bit, like /tmp)::

    [{"targets": ["10.0.0.5:8787"], "labels": {"cluster_id": "Scheduler-..."}}]

Prometheus does not read these files: the login host's discovery service (``daskhpc
discovery-serve``, daskhpc/discovery_serve.py) serves them over mutually authenticated HTTPS,
and takes the ``user`` label from the file's owner, never from its content. So the file
carries only what the owner may choose: where its own scheduler's ``/metrics`` listens (mutual TLS,
daskhpc.cluster.owner_http) and the cluster's id. The service also removes the files of
schedulers whose socket has gone.

``register`` is called when a cluster starts and ``unregister`` when it closes.
Discovery must never break a user's cluster: failures are logged and ``register`` returns None.
"""

from __future__ import annotations

import atexit
import getpass
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
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


def _ip_literal(host):
    """The scheduler's host as an IP address: the discovery service accepts addresses, not names."""
    if not host:
        raise ValueError("the scheduler's address has no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]


def _cluster_id(cluster):
    info = getattr(cluster, "scheduler_info", None)
    if isinstance(info, dict) and info.get("address"):
        return info.get("id", "")
    return cluster.id


def scheduler_endpoint(cluster):
    """(cluster_id, "ip:metrics_port") of a Dask cluster (SpecCluster/LocalCluster/BurstCluster)
    or of a distributed Scheduler object."""
    info = getattr(cluster, "scheduler_info", None)
    if isinstance(info, dict) and info.get("address"):
        address, cluster_id = info["address"], info.get("id", "")
        port = (info.get("services") or {}).get("metrics")
    else:  # a Scheduler object
        address, cluster_id = cluster.address, cluster.id
        server = getattr(cluster, "metrics_server", None)
        port = server.port if server is not None else None
    if not port:
        raise ValueError("the scheduler serves no /metrics over mutual TLS, so Prometheus has nothing to scrape "
                         "(only daskhpc's OwnerScheduler, which BurstCluster runs, serves it)")
    host = _ip_literal(urllib.parse.urlsplit(address).hostname)
    return cluster_id, ("[%s]:%d" if ":" in host else "%s:%d") % (host, int(port))


def _safe(text):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def target_path(directory, cluster_id, user=None, host=None, pid=None):
    # The random part makes the name unguessable: nobody can plant a file, FIFO or symlink
    # under it beforehand (in a sticky directory the rename onto it would then fail).
    return os.path.join(directory, "%s-%s-%d-%s-%s%s" % (
        _safe(user or getpass.getuser()), _safe(host or socket.gethostname()), pid or os.getpid(),
        _safe(cluster_id)[:100], secrets.token_hex(8), SUFFIX))


def _write_atomic(path, data):
    """Write a new file next to `path`, then rename it there: the service never reads half a file.

    O_EXCL on a fresh random name and O_NOFOLLOW: in a world-writable directory nothing that
    another user prepared (a symlink, a FIFO, an existing file) is ever opened or written through.
    """
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, ".tmp-%s%s" % (secrets.token_hex(8), SUFFIX))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # readable by the discovery service whatever the user's umask
            os.fchmod(handle.fileno(), 0o644)
            json.dump(data, handle, sort_keys=True)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_registered = {}


def register(cluster, directory=None, user=None):
    """Write the target file for `cluster`'s scheduler; return its path (None if not possible).

    `user` only names the file; the discovery service labels the target with the file's owner.
    """
    directory = directory or targets_dir()
    try:
        cluster_id, endpoint = scheduler_endpoint(cluster)
        path = target_path(directory, cluster_id, user=user)
        _write_atomic(path, [{"targets": [endpoint], "labels": {"cluster_id": cluster_id}}])
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("could not register the Dask scheduler with Prometheus in %s: %s", directory, exc)
        return None
    _registered[cluster_id] = path
    return path


def unregister(cluster):
    """Remove `cluster`'s target file; safe to call twice or for a cluster never registered."""
    try:
        cluster_id = _cluster_id(cluster)
    except AttributeError:
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
