# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Raw facts from one host, with the standard library only.

playbooks/audit.yml copies this file to every host (``ansible.builtin.script``)
and the CLI imports it for the local host, so both gather the same facts.
Everything is returned raw (the tools' own output, certificate PEM text); it is parsed
(daskhpc.scheduler's SLURM and PBS adapters) and judged (daskhpc.audit.collect) on the controller.
A source that cannot be read becomes ``{"unavailable": "reason"}``.

    python3 probe.py host [--python /opt/daskhpc/venv/bin/python] [--tls-dir DIR]
    python3 probe.py scheduler --since 2024-01-01T00:00:00 --until 2024-02-01T00:00:00
    python3 probe.py scheduler --scheduler pbs      (qmgr and the server's accounting log)
    python3 probe.py directory --group datasci --user alice
    python3 probe.py ledger --ca-dir /etc/daskhpc/ca
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import pwd
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timedelta

TIMEOUT = 120

# Prints every installed distribution's licence fields as JSON; run with the
# production Python so it reads that environment, not ours.
LICENCE_SCRIPT = r"""
import json
from importlib import metadata
out = {}
for dist in metadata.distributions():
    meta = dist.metadata
    name = meta.get("Name")
    if not name:
        continue
    out[name.lower()] = {
        "name": name,
        "version": dist.version,
        "license_expression": meta.get("License-Expression") or "",
        "license": (meta.get("License") or "")[:200],
        "classifiers": sorted(c for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")),
    }
print(json.dumps(out, sort_keys=True))
"""

DASK_VERSION_SCRIPT = "import dask, distributed; print(dask.__version__, distributed.__version__)"


def unavailable(reason):
    return {"unavailable": str(reason).strip() or "no reason given"}


def run(argv, env=None):
    """Standard output of a command, or an `unavailable` record saying why not.

    Not daskhpc.core.command.run: ansible.builtin.script copies this one file to hosts whose
    system python3 has no daskhpc package, so the probe keeps its own runner.
    """
    if not shutil.which(argv[0]) and not os.path.exists(argv[0]):
        return unavailable("%s is not installed" % argv[0])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False,
                              env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return unavailable("%s: %s" % (" ".join(argv), exc))
    if proc.returncode != 0:
        return unavailable("%s exited %d: %s" % (" ".join(argv), proc.returncode,
                                                 (proc.stderr or proc.stdout).strip()[:300]))
    return proc.stdout


def _version(argv):
    out = run(argv)
    if isinstance(out, dict):
        return out
    return (out.strip().splitlines() or [""])[0]


def os_release():
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            fields = dict(line.rstrip("\n").split("=", 1) for line in handle if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"') or platform.platform()
    except OSError:
        return platform.platform()


# The probe runs as root and reads users' ~/.daskhpc/tls, which the users control: directories are
# opened without following symlinks and must belong to the home's owner, files are opened through
# the directory's descriptor, never followed, never a FIFO (O_NONBLOCK), and must belong to that
# owner too. (This file runs alone on each host, so it cannot import module_utils/_core/safepath.py.)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
USER_TLS = (".daskhpc", "tls")


def homes():
    found = set(glob.glob("/home/*"))
    try:
        found.update(entry.pw_dir for entry in pwd.getpwall() if entry.pw_dir)
    except OSError:
        pass
    return sorted(found)


def _open_user_tls(home):
    """(fd, owner) of home/.daskhpc/tls; None when absent; raises OSError when it is not safe to read."""
    try:
        fd = os.open(home, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    owner = os.fstat(fd).st_uid
    try:
        for name in USER_TLS:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.close(fd)
                return None
            os.close(fd)
            fd = child
            if os.fstat(fd).st_uid != owner:
                raise PermissionError("%s is not owned by uid %d" % (name, owner))
    except BaseException:
        os.close(fd)
        raise
    return fd, owner


def _scan_fd(fd, directory, owner):
    found = []
    for name in sorted(os.listdir(fd)):
        if not name.endswith((".pem", ".crt")):
            continue
        path = os.path.join(directory, name)
        try:
            file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
            with os.fdopen(file_fd, "rb") as handle:
                st = os.fstat(file_fd)
                if not stat.S_ISREG(st.st_mode):
                    raise PermissionError("not a regular file")
                if owner is not None and st.st_uid != owner:  # in a user's directory: a link to root's?
                    raise PermissionError("owned by uid %d, not by uid %d" % (st.st_uid, owner))
                text = handle.read(1 << 20).decode("ascii", "replace")
        except OSError as exc:
            found.append({"path": path, "error": str(exc)})
            continue
        if "BEGIN CERTIFICATE" in text and "PRIVATE KEY" not in text:
            found.append({"path": path, "pem": text})
    return found


def scan_certificates(base_dir="/etc/daskhpc/tls", user_homes=None):
    """PEM text of every certificate file (never a key) in the site TLS directory and users' ~/.daskhpc/tls."""
    found = []
    try:
        fd = os.open(base_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # root's own directory
    except OSError:
        fd = None
    if fd is not None:
        try:
            found += _scan_fd(fd, base_dir, None)  # services own their files here
        finally:
            os.close(fd)
    for home in homes() if user_homes is None else user_homes:
        directory = os.path.join(home, *USER_TLS)
        try:
            opened = _open_user_tls(home)
        except OSError as exc:
            found.append({"path": directory, "error": "not read: %s" % (exc.strerror or exc)})
            continue
        if opened:
            try:
                found += _scan_fd(opened[0], directory, opened[1])
            finally:
                os.close(opened[0])
    return found


def host_facts(python=None, tls_dir="/etc/daskhpc/tls"):
    facts = {
        "hostname": platform.node(),
        "os": os_release(),
        "versions": {
            "slurm": _version(["sinfo", "--version"]),
            "munge": _version(["munged", "--version"]),
            "slapd": _slapd_version(),
            "python": platform.python_version(),
        },
        "certificates": scan_certificates(tls_dir),
    }
    if python:
        out = run([python, "-c", DASK_VERSION_SCRIPT])
        facts["versions"]["dask"] = out if isinstance(out, dict) else "dask %s, distributed %s" % tuple(
            (out.split() + ["?", "?"])[:2])
        facts["site_python"] = python
        out = run([python, "-c", LICENCE_SCRIPT])
        facts["packages"] = out if isinstance(out, dict) else json.loads(out)
    else:
        facts["versions"]["dask"] = unavailable("no site Python given")
        facts["packages"] = unavailable("no site Python given")
    return facts


def _slapd_version():
    # slapd -V prints its banner on stderr and exits 0 on Debian 12.
    binary = shutil.which("slapd") or ("/usr/sbin/slapd" if os.path.exists("/usr/sbin/slapd") else None)
    if not binary:
        return unavailable("slapd is not installed")
    try:
        proc = subprocess.run([binary, "-VV"], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return unavailable(str(exc))
    text = (proc.stderr or proc.stdout).strip()
    for line in text.splitlines():
        if "slapd" in line:
            return line.strip().lstrip("@(#) $").rstrip(" $")
    return unavailable("slapd -VV printed no version")


SACCT_FIELDS = "JobID,User,Account,Partition,QOS,State,Start,End,ElapsedRaw,AllocCPUS"
ASSOC_FIELDS = "Cluster,Account,User,Partition,QOS,DefaultQOS"
QOS_FIELDS = "Name,Priority,Preempt,PreemptMode,GraceTime,MaxTRESPU,MaxJobsPU,MaxSubmitPU,GrpTRES,MaxWall,Flags"


def default_period(days=30):
    """The `days` days up to the next whole hour, in local time as sacct prints it.

    Rounding up keeps reports of the same state identical within the hour, and counts
    everything issued or run so far (certificates are judged up to an hour early).
    """
    until = datetime.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return (until - timedelta(days=days)).isoformat(), until.isoformat()


def scheduler_facts(since=None, until=None):
    if not (since and until):
        since, until = default_period()
    return {
        "period": {"since": since, "until": until},
        "scontrol_partitions": run(["scontrol", "show", "partition", "--oneliner"]),
        "sacctmgr_qos": run(["sacctmgr", "show", "qos", "--parsable2", "--noheader", "format=" + QOS_FIELDS]),
        "sacctmgr_assoc": run(["sacctmgr", "show", "assoc", "--parsable2", "--noheader", "format=" + ASSOC_FIELDS]),
        # --duplicates keeps the runs a requeue replaced, so preemptions are counted.
        "sacct": run(["sacct", "--allusers", "--allocations", "--duplicates", "--parsable2", "--noheader",
                      "--starttime", since, "--endtime", until, "--format=" + SACCT_FIELDS]),
    }


PBS_CONF = "/etc/pbs.conf"


def pbs_conf(path=PBS_CONF):
    """PBS_EXEC, PBS_HOME, ... from /etc/pbs.conf ({} when it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    conf = {}
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            conf[key.strip()] = value.strip().strip('"')
    return conf


def pbs_accounting(home, since, until):
    """The server's accounting records from `since` to `until` (one file per day, named YYYYMMDD)."""
    directory = os.path.join(home, "server_priv", "accounting")
    if not os.path.isdir(directory):
        return unavailable("%s does not exist (not the PBS server host?)" % directory)
    start, end = datetime.fromisoformat(since), datetime.fromisoformat(until)
    lines = []
    day = start.date()
    while day <= end.date():
        path = os.path.join(directory, day.strftime("%Y%m%d"))
        day += timedelta(days=1)
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return unavailable("cannot read %s: %s" % (path, exc.strerror or exc))
        for line in text.splitlines():
            try:
                when = datetime.strptime(line.split(";", 1)[0], "%m/%d/%Y %H:%M:%S")
            except ValueError:
                continue
            if start <= when < end:
                lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def pbs_scheduler_facts(since=None, until=None):
    """Queues, scheduler and accounting of the PBS server this runs on (as root)."""
    if not (since and until):
        since, until = default_period()
    conf = pbs_conf()
    qmgr = os.path.join(conf.get("PBS_EXEC", "/opt/pbs"), "bin", "qmgr")
    home = conf.get("PBS_HOME", "/var/spool/pbs")
    return {
        "period": {"since": since, "until": until},
        "scheduler": "pbs",
        "pbs_home": home,
        "pbs_print_server": run([qmgr, "-c", "print server"]),
        "pbs_print_sched": run([qmgr, "-c", "print sched"]),
        "pbs_accounting": pbs_accounting(home, since, until),
    }


def association_users():
    out = run(["sacctmgr", "show", "assoc", "--parsable2", "--noheader", "format=User"])
    return [] if isinstance(out, dict) else sorted({u for u in out.split() if u})


def directory_facts(groups, users):
    """Members of each group and which users exist (the members and `users`), through the name service."""
    out = {"source": "getent", "groups": {}, "users": {}}
    for group in sorted(set(groups)):
        text = run(["getent", "group", "--", group])  # "--": names are data, never options
        if isinstance(text, dict):
            out["groups"][group] = None  # not found
            continue
        fields = text.strip().split(":")
        out["groups"][group] = sorted(m for m in (fields[3].split(",") if len(fields) > 3 else []) if m)
    users = set(users) | {m for members in out["groups"].values() for m in (members or [])}
    for user in sorted(users):
        out["users"][user] = not isinstance(run(["getent", "passwd", "--", user]), dict)
    return out


def ledger(ca_dir):
    path = os.path.join(ca_dir, "ledger.jsonl")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        return unavailable("cannot read %s: %s" % (path, exc.strerror or exc))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    host = sub.add_parser("host")
    host.add_argument("--python")
    host.add_argument("--tls-dir", default="/etc/daskhpc/tls")
    sched = sub.add_parser("scheduler")
    sched.add_argument("--since", help="default: 30 days before --until")
    sched.add_argument("--until", help="default: the current whole hour")
    sched.add_argument("--scheduler", choices=("slurm", "pbs"), default="slurm")
    dirs = sub.add_parser("directory")
    dirs.add_argument("--group", action="append", default=[])
    dirs.add_argument("--user", action="append", default=[])
    dirs.add_argument("--association-users", action="store_true", help="also check every user holding a "
                      "Slurm association (sacctmgr)")
    led = sub.add_parser("ledger")
    led.add_argument("--ca-dir", required=True)
    args = parser.parse_args(argv)
    if args.what == "host":
        result = host_facts(args.python, args.tls_dir)
    elif args.what == "scheduler":
        read = pbs_scheduler_facts if args.scheduler == "pbs" else scheduler_facts
        result = read(args.since, args.until)
    elif args.what == "directory":
        users = args.user + (association_users() if args.association_users else [])
        result = directory_facts(args.group, users)
    else:
        result = ledger(args.ca_dir)
    json.dump(result, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
