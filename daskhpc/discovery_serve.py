"""``daskhpc discovery-serve``: this login host's Dask schedulers as Prometheus HTTP service discovery.

Users' clusters write one small file each into the targets directory (daskhpc/discovery.py).
This service answers Prometheus's ``http_sd_configs`` requests from those files, over HTTPS
with a certificate from the site CA, and only to a client that presents Prometheus's service
certificate from the same CA (mutual TLS). Anyone can write into the directory, so every
answer is rebuilt from the files with rules that trust nothing a file says about itself:

* ``user`` is the name of the file's owner (fstat); labels in the file (``user``, ``job``,
  ``__address__``, ``__metrics_path__``, ``__scheme__``, ``__meta_*``...) are ignored. Only
  ``cluster_id`` is taken from the file, as a plain label of the owner's own target.
* Symlinks and anything but regular files are skipped without being opened for reading
  that could block (lstat first, then O_NONBLOCK|O_NOFOLLOW and fstat).
* A target must be an IP address of this host (not loopback or link-local) and a port on which a TCP
  socket of the file's owner is listening (/proc/net/tcp and tcp6, uid column). So nobody can
  point Prometheus at another host, another user's scheduler or a service of the system.
* A file whose socket is gone (a scheduler that died without closing) is removed, once it is
  older than GRACE_SECONDS. The service may: the directory is its own (sticky directories let
  their owner remove any entry), so it needs no capability.
* Files over ``--max-bytes`` and more than ``--max-per-user`` targets per user are skipped
  (newest files first).

Certificates, CA bundle and CRL are re-read when they change on disk (renewals need no restart).
``--once`` prints the current answer and exits.
"""

from __future__ import annotations

import argparse
import collections
import http.server
import ipaddress
import json
import logging
import os
import pwd
import re
import socket
import stat
import struct
import sys
import time

from daskhpc.identity import certificate_identity
from daskhpc.tls_server import MutualTLSServer, TLSFiles

log = logging.getLogger("daskhpc.discovery_serve")

SUFFIX = ".json"
MAX_BYTES = 4096
MAX_PER_USER = 16
# A scheduler writes its file once its dashboard listens; the grace covers clock skew and slow starts.
GRACE_SECONDS = 60
# Unauthenticated peers may connect: bound what they can hold (threads, seconds).
MAX_CONNECTIONS = 16
TIMEOUT_SECONDS = 10
LISTEN_STATE = "0A"
PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
CLUSTER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


# --- what this host knows for sure --------------------------------------------------------


def _proc_ip(hex_text):
    # /proc/net/tcp prints addresses as 32-bit words in the host's byte order.
    words = [int(hex_text[i:i + 8], 16) for i in range(0, len(hex_text), 8)]
    return ipaddress.ip_address(b"".join(struct.pack("=I", word) for word in words))


def listening_sockets(paths=PROC_NET_TCP):
    """{(ip, port, uid)} of the TCP sockets in LISTEN state (IPv4 and IPv6) in this network namespace."""
    found = set()
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                next(handle, None)  # header
                for line in handle:
                    fields = line.split()
                    if len(fields) < 8 or fields[3] != LISTEN_STATE:
                        continue
                    address, port = fields[1].split(":")
                    found.add((_proc_ip(address), int(port, 16), int(fields[7])))
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
    return found


def local_addresses():
    """This host's own IP addresses that another host can reach: not loopback, not link-local."""
    import psutil

    addresses = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(entry.address.split("%")[0])
                if not (ip.is_loopback or ip.is_link_local):
                    addresses.add(ip)
    return addresses


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


# --- one file ---------------------------------------------------------------------------------


def parse_target(text):
    """(ip, port) from "10.0.0.5:8787" or "[2001:db8::1]:8787"; ValueError otherwise."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("%r is not address:port" % (text,))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ip = ipaddress.ip_address(host)
    if ip.version == 6 and not str(text).startswith("["):
        raise ValueError("%r: write IPv6 addresses as [address]:port" % (text,))
    return ip, int(port)


def format_target(ip, port):
    return ("[%s]:%d" if ip.version == 6 else "%s:%d") % (ip, port)


def read_regular(path, max_bytes):
    """(data, fstat) of a regular file; None for anything else. Never blocks on FIFOs or devices."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:  # a symlink (ELOOP), removed meanwhile, unreadable
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        data = os.read(fd, max_bytes + 1)
        return (data, st) if len(data) <= max_bytes else None
    finally:
        os.close(fd)


def parse_entry(data):
    """(target text, cluster_id) from a file written by daskhpc.discovery.register."""
    groups = json.loads(data)
    group = groups[0]
    targets = group["targets"]
    if not isinstance(targets, list) or len(targets) != 1 or not isinstance(targets[0], str):
        raise ValueError("one target expected")
    labels = group.get("labels") or {}
    cluster_id = labels.get("cluster_id") if isinstance(labels, dict) else None
    return targets[0], cluster_id if isinstance(cluster_id, str) and CLUSTER_ID.match(cluster_id) else ""


# --- the whole directory ----------------------------------------------------------------------


class Discovery:
    """Builds the http_sd answer from the targets directory, each time from scratch."""

    def __init__(self, directory, *, site="", max_bytes=MAX_BYTES, max_per_user=MAX_PER_USER,
                 grace_seconds=GRACE_SECONDS):
        self.directory = directory
        self.site = site
        self.max_bytes = max_bytes
        self.max_per_user = max_per_user
        self.grace_seconds = grace_seconds

    def candidates(self):
        """lstat of every visible *.json entry that is a regular file, newest first."""
        found = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            log.warning("cannot read %s: %s", self.directory, exc)
            return found
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(SUFFIX):
                continue  # temporary files of a register in progress
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((entry.path, st))
        found.sort(key=lambda item: (-item[1].st_mtime, item[0]))
        return found

    def targets(self):
        """The http_sd answer: [{"targets": ["ip:port"], "labels": {...}}]; removes dead entries."""
        listening = listening_sockets()
        addresses = local_addresses()
        served, opened, seen, groups = collections.Counter(), collections.Counter(), set(), []
        for path, lst in self.candidates():
            # a user's junk costs this user's entries, not everyone's answer
            if served[lst.st_uid] >= self.max_per_user or opened[lst.st_uid] >= 4 * self.max_per_user:
                continue
            opened[lst.st_uid] += 1
            read = read_regular(path, self.max_bytes)
            if read is None:
                continue
            data, st = read
            uid = st.st_uid  # the owner, from the open file itself
            try:
                text, cluster_id = parse_entry(data)
                ip, port = parse_target(text)
            # RecursionError: a few KiB of "[[[[" would otherwise fail every answer
            except (ValueError, LookupError, TypeError, AttributeError, RecursionError) as exc:
                log.debug("skipping %s (uid %d): %s", path, uid, exc)
                continue
            if ip not in addresses:
                log.debug("skipping %s (uid %d): %s is not an address of this host", path, uid, ip)
                continue
            wildcard = ipaddress.ip_address("::" if ip.version == 6 else "0.0.0.0")
            if (ip, port, uid) not in listening and (wildcard, port, uid) not in listening:
                self.remove_dead(path, st)
                continue
            user = user_name(uid)
            if user is None or (uid, ip, port) in seen:
                continue
            seen.add((uid, ip, port))
            served[uid] += 1
            labels = {"user": user, "cluster_id": cluster_id}
            if self.site:
                labels["site"] = self.site
            groups.append({"targets": [format_target(ip, port)], "labels": labels})
        return groups

    def remove_dead(self, path, st):
        """Remove the file of a scheduler whose socket has gone (after the grace period)."""
        if time.time() - st.st_mtime < self.grace_seconds:
            return
        try:
            now_there = os.lstat(path)
            if (now_there.st_dev, now_there.st_ino) != (st.st_dev, st.st_ino):
                return  # replaced since it was read: judge the new file next time
            os.unlink(path)
            log.info("removed %s (uid %d): nothing listens on its port any more", path, st.st_uid)
        except FileNotFoundError:  # another request removed it first
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc)


# --- TLS and HTTP -------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "daskhpc-discovery"
    timeout = TIMEOUT_SECONDS

    def do_GET(self):  # noqa: N802 (http.server's naming)
        der = self.connection.getpeercert(binary_form=True)
        names, is_service = certificate_identity(der) if der else (set(), False)
        if not is_service or not names & self.server.allowed:
            log.warning("refused %s: certificate for %s is not Prometheus's (%s)", self.client_address[0],
                        ",".join(sorted(names)), ",".join(sorted(self.server.allowed)))
            self.send_error(403, "not Prometheus's certificate")
            return
        if self.path.split("?")[0] not in ("/", "/targets"):
            self.send_error(404)
            return
        body = json.dumps(self.server.discovery.targets()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        log.debug("%s %s", self.client_address[0], format % args)


class DiscoveryServer(MutualTLSServer):
    """The targets over HTTPS, to site service certificates naming one of ``allowed`` only."""

    def __init__(self, address, tls, allowed, discovery):
        self.discovery = discovery
        super().__init__(address, Handler, tls, allowed, max_connections=MAX_CONNECTIONS, timeout=TIMEOUT_SECONDS)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="daskhpc discovery-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the targets directory (metrics.dask_targets_dir)")
    parser.add_argument("--listen", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=9818, help="port to listen on (metrics.discovery_port)")
    parser.add_argument("--cert", help="this service's certificate (site CA)")
    parser.add_argument("--key", help="its private key")
    parser.add_argument("--ca", default="/etc/daskhpc/tls/ca.pem", help="the site CA bundle")
    parser.add_argument("--crl", default="/etc/daskhpc/tls/crl.pem", help="the site CRL (used when present)")
    parser.add_argument("--allow", action="append", default=[],
                        help="a name (CN or SAN) of Prometheus's service certificate; repeat for more")
    parser.add_argument("--site", default="", help="the site's name, given to every target as label site")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="larger files are skipped")
    parser.add_argument("--max-per-user", type=int, default=MAX_PER_USER, help="targets served per user")
    parser.add_argument("--once", action="store_true", help="print the current answer and exit")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    discovery = Discovery(args.dir, site=args.site, max_bytes=args.max_bytes, max_per_user=args.max_per_user)
    if args.once:
        print(json.dumps(discovery.targets(), indent=1))
        return 0
    if not (args.cert and args.key and args.allow):
        parser.error("--cert, --key and at least one --allow are required to serve")
    tls = TLSFiles(args.cert, args.key, args.ca, args.crl)
    tls.context()  # fail now, not at the first request, if the files are unusable
    server = DiscoveryServer((args.listen, args.port), tls, args.allow, discovery)
    log.info("serving %s on https://%s:%d/targets to %s", args.dir, args.listen, args.port, ", ".join(args.allow))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
