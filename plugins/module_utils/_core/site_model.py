# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site model: validation and everything derived from it.

This file is the one place where the site model is checked and interpreted.
It is pure Python (no Ansible imports) so that modules, filters, the
``daskhpc`` package and the tests all share it unchanged.

Every field has a type, a grammar and a range (docs/site-model.md lists them):
no wider than what SLURM, sacctmgr, LDAP, X.509 and Prometheus accept, so that
a value that passes here cannot break a file rendered from it.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from functools import cached_property

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
SCHEDULERS = ("slurm", "pbs")
CLASSES = ("production", "burst")
PRODUCTION_TIER_DEFAULT = 10
BURST_TIER_DEFAULT = 1
KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096")

# Bounds. A model beyond them is refused before anything is expanded or rendered.
MAX_NODES = 100000  # nodes in the whole model (SLURM's largest systems have a few tens of thousands)
MAX_ENTRIES = 1024  # entries in one list (node groups, partitions, groups, features, references)
MAX_PARTITION_NODES = 1000000  # node memberships summed over all partitions
MAX_VALUES = 200000  # values in the whole model, counting every use of a YAML alias
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_FILE_BYTES = 1024 * 1024  # a site file (load_site_file)
MAX_ALIASES = 64  # YAML aliases in a site file (load_site_file)
MAX_CPUS = 65533  # CPUs= is a 16-bit count in SLURM (65534 and 65535 are reserved)
MAX_MEMORY_MB = 1024**3  # RealMemory= in MB: 1 PiB
MAX_TIER = 65533  # PriorityTier= is 16-bit, like CPUs=
MAX_GRACE_SECONDS = 86400  # GraceTime=: one day
MAX_TIME_MINUTES = 365 * 1440  # MaxTime=/MaxWall=: a year (longer is UNLIMITED)
MAX_JOBS = 1000000  # MaxJobsPerUser=, MaxSubmitJobsPerUser=
MAX_HOST_CERT_DAYS = 825  # below the issuing CA's 3 years minus its 90-day renewal window
MAX_USER_CERT_DAYS = 397
MAX_SCRAPE_SECONDS = 3600
MAX_WORKER_MEMORY = 1024**5  # 1 PiB
MIN_WORKER_MEMORY = 1024**2  # 1 MiB
SLURM_PORTS = {6817: "SlurmctldPort", 6818: "SlurmdPort"}  # fixed in roles/slurm/templates
RESERVED_PARTITION_NAMES = ("default",)  # PartitionName=DEFAULT sets defaults in slurm.conf
RESERVED_NODE_NAMES = ("default", "all")  # NodeName=DEFAULT sets defaults; Nodes=ALL means every node
RESERVED_ACCOUNTS = ("root",)  # the root of sacctmgr's account tree
RESERVED_QOS = ("normal",)  # every association's default QOS
SYSTEM_DIRS = frozenset([
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/usr/bin", "/usr/lib", "/usr/local",
    "/usr/sbin", "/usr/share", "/var/lib", "/var/log", "/var/tmp", "/var/run", "/etc/ssl", "/etc/pki",
])

NODE_GROUP_DEFAULTS = {"features": [], "hostname": None, "port": None}
PARTITION_DEFAULTS = {
    "default": False,
    "allow_groups": [],
    "max_time": "UNLIMITED",
    "priority_tier": None,
}
BURST_DEFAULTS = {
    "qos": "burst",
    "account": "burst",
    "grace_time": 60,
    "max_walltime": "04:00:00",
    "max_share_percent": 50,
    "per_user": {"max_cores": 16, "max_jobs": 32, "max_submit_jobs": 200},
}
ACCOUNTING_DEFAULTS = {"host": None, "port": 6819, "database": "slurm_acct_db"}
LDAP_DEFAULTS = {
    "uri": None,
    "start_tls": True,
    "base_dn": None,
    "user_base": None,
    "group_base": None,
    "bind_dn": None,
    # rfc2307 (posixGroup, memberUid: no nesting), rfc2307bis (groupOfNames, member DNs, nested) or
    # ad (Active Directory with RFC 2307 attributes: group, member DNs, nested, sAMAccountName).
    "schema": "rfc2307",
    "group_schema": None,  # follows from schema; older models name it, and it must then fit
    "login_attribute": None,  # follows from schema: uid, or sAMAccountName for ad
    # The most a leaver keeps access after leaving a group: every cache between the directory and
    # slurmctld's AllowGroups check together (sssd's entry and fast caches, GroupUpdateTime).
    "cache_seconds": 300,
}
# What a directory schema implies: its group class and the login names it can give.
LDAP_SCHEMAS = {
    "rfc2307": {"group_schema": "posixGroup", "login_attributes": ("uid",)},
    "rfc2307bis": {"group_schema": "groupOfNames", "login_attributes": ("uid",)},
    "ad": {"group_schema": "group", "login_attributes": ("sAMAccountName", "uid")},
}
MIN_CACHE_SECONDS = 30  # shorter only multiplies directory round trips on every node
MAX_CACHE_SECONDS = 86400
CA_DEFAULTS = {
    "name": None,
    "dir": "/etc/daskhpc/ca",
    "key_type": "ecdsa-p256",
    "host_cert_days": 90,
    "user_cert_days": 7,
    "renew_before_days": 2,
}
METRICS_DEFAULTS = {
    "exporter_port": 9817,
    "prometheus_port": 9090,
    "scrape_interval": "30s",
    "dask_targets_dir": "/var/lib/daskhpc/dask-targets",
    # the login hosts' discovery service (daskhpc discovery-serve), asked by Prometheus
    "discovery_port": 9818,
}
DASK_DEFAULTS = {
    "contact": None,
    "python": "/opt/daskhpc/venv/bin/python",
    "interface": None,
    "worker_cores": 1,
    "worker_memory": "2GiB",
    "tls": "required",
    # The site environment's data-science stack (pip requirement strings), installed with daskhpc on the login
    # and compute hosts from one wheelhouse. Each package costs converge time on every host: add, say, scipy,
    # scikit-learn or matplotlib here when users need them.
    "packages": ["dask[array,dataframe,distributed]", "pandas", "pyarrow", "numpy", "bokeh>=3.1"],
}
JUPYTERHUB_DEFAULTS = {
    # JupyterHub on the login hosts (role jupyterhub): users log in with their directory password, the burst
    # groups are let in, and HTTPS carries a certificate from the site CA.
    "enabled": False,
    "port": 8443,
    # Installed into the site environment on the login hosts only, from a wheelhouse pinned to the site's.
    "packages": ["jupyterhub", "jupyterlab", "jupyter-server-proxy", "dask-labextension", "ipywidgets"],
}
SECTION_DEFAULTS = {
    "burst": BURST_DEFAULTS,
    "accounting": ACCOUNTING_DEFAULTS,
    "ldap": LDAP_DEFAULTS,
    "ca": CA_DEFAULTS,
    "metrics": METRICS_DEFAULTS,
    "dask": DASK_DEFAULTS,
    "jupyterhub": JUPYTERHUB_DEFAULTS,
}
TOP_LEVEL_KEYS = {"name", "scheduler", "node_groups", "groups", "partitions"} | set(SECTION_DEFAULTS)


class SiteModelError(ValueError):
    """Raised with every problem found, each naming its field and its fix."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("site model is invalid:\n" + "\n".join("  - " + e for e in self.errors))


# --- small parsers -----------------------------------------------------------

_HOSTLIST_PART = re.compile(r"([^\[,]+)(?:\[([^\]]+)\])?(?:,|$)")


def _parse_hostlist(expr):
    """[(prefix, [(lo, hi, width)] or None)] of a SLURM-style host list, without expanding it."""
    parts = []
    pos = 0
    expr = str(expr).strip()
    while pos < len(expr):
        match = _HOSTLIST_PART.match(expr, pos)
        if not match or match.end() == pos:
            raise ValueError("cannot parse host list %s near %s" % (_show(expr), _show(expr[pos:])))
        prefix, ranges = match.group(1), match.group(2)
        if ranges is None:
            parts.append((prefix, None))
        else:
            spans = []
            for part in ranges.split(","):
                lo, _sep, hi = part.partition("-")
                hi = hi or lo
                if not (lo.isdigit() and hi.isdigit()) or len(lo) > 18 or len(hi) > 18 or int(hi) < int(lo):
                    raise ValueError("bad range %s in host list %s" % (_show(part), _show(expr)))
                spans.append((int(lo), int(hi), len(lo)))
            parts.append((prefix, spans))
        pos = match.end()
    return parts


def hostlist_size(expr):
    """How many hosts a host list names, computed without expanding it."""
    return sum(1 if spans is None else sum(hi - lo + 1 for lo, hi, _width in spans)
               for _prefix, spans in _parse_hostlist(expr))


def expand_hostlist(expr, limit=MAX_NODES):
    """Expand a SLURM-style host list such as ``n[1-4,7],gpu01`` (at most `limit` hosts, checked first)."""
    parts = _parse_hostlist(expr)
    size = sum(1 if spans is None else sum(hi - lo + 1 for lo, hi, _width in spans) for _prefix, spans in parts)
    if limit is not None and size > limit:
        raise ValueError("host list %s names %d hosts, more than %d" % (_show(str(expr)), size, limit))
    hosts = []
    for prefix, spans in parts:
        if spans is None:
            hosts.append(prefix)
        else:
            for lo, hi, width in spans:
                hosts.extend("%s%0*d" % (prefix, width, i) for i in range(lo, hi + 1))
    return hosts


_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_duration_minutes(value):
    """Minutes in a SLURM time spec: ``MM``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``; None for UNLIMITED."""
    text = str(value).strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    match = _TIME_RE.match(text)
    if not match:
        raise ValueError("%r is not a time (use MM, HH:MM:SS or D-HH:MM:SS)" % (value,))
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
        total = int(days) * 1440 + hours * 60 + minutes + seconds / 60.0
    elif b is None:  # MM
        total = int(a)
    elif c is None:  # MM:SS
        total = int(a) + int(b) / 60.0
    else:  # HH:MM:SS
        total = int(a) * 60 + int(b) + int(c) / 60.0
    return int(total) if total == int(total) else total


_STRICT_TIME_RE = re.compile(r"(?:(\d{1,3})-)?(\d{1,6})(?::(\d{1,2}))?(?::(\d{1,2}))?\Z")


def slurm_time_minutes(value):
    """Minutes of a SLURM time as slurm.conf and sacctmgr accept it, None for UNLIMITED; ValueError otherwise.

    Stricter than parse_duration_minutes: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS with
    MM and SS below 60 and HH below 24 when days are given; more than zero and at most a year.
    A whole number (YAML int) is minutes.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("%s is not a SLURM time" % _show(value))
    if isinstance(value, int):
        total = value
    elif value.upper() in ("UNLIMITED", "INFINITE"):
        return None
    else:
        match = _STRICT_TIME_RE.match(value)
        if not match:
            raise ValueError("%s is not a SLURM time" % _show(value))
        days, a, b, c = match.groups()
        fields = [int(x) for x in (a, b, c) if x is not None]
        if days is not None:
            if fields[0] > 23:
                raise ValueError("%s has %d hours after the days; hours must be below 24" % (_show(value), fields[0]))
            checked = fields[1:]
        else:
            checked = fields[1:] if len(fields) == 3 else fields if len(fields) == 2 else []
        if any(x > 59 for x in checked):
            raise ValueError("%s has minutes or seconds of 60 or more" % _show(value))
        total = parse_duration_minutes(value)
    if not 0 < total <= MAX_TIME_MINUTES:
        raise ValueError("%s is not more than zero and at most %s"
                         % (_show(value), format_slurm_minutes(MAX_TIME_MINUTES)))
    return total


def format_slurm_minutes(minutes):
    """Minutes to the D-HH:MM:SS form slurm.conf and sacctmgr print."""
    if minutes is None:
        return "UNLIMITED"
    total = int(round(minutes * 60))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    hms = "%02d:%02d:%02d" % (hours, mins, secs)
    return "%d-%s" % (days, hms) if days else hms


_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 1000**2, "MB": 1000**2,
               "MIB": 1024**2, "G": 1000**3, "GB": 1000**3, "GIB": 1024**3, "T": 1000**4,
               "TB": 1000**4, "TIB": 1024**4}


def parse_size_bytes(value):
    """Bytes in a size such as ``2GiB``, ``500MB`` or ``1024``."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$", str(value))
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise ValueError("%r is not a size (use e.g. 2GiB or 500MB)" % (value,))
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


_ATTR_TYPE_RE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)*)\Z")
_DN_SPECIAL = '"+,;<>\\='
_HEX = "0123456789abcdefABCDEF"


def parse_dn(text):
    """The RDNs of an RFC 4514 distinguished name, each a sorted tuple of (type, value) in lower case.

    ValueError if `text` is not a DN. No spaces around separators, no control characters.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("%s is not a DN" % _show(text))
    rdns, avas, pos, n = [], [], 0, len(text)
    while True:
        eq = text.find("=", pos)
        if eq < 0:
            raise ValueError("%s: %s has no '='" % (_show(text), _show(text[pos:])))
        attr = text[pos:eq]
        if not _ATTR_TYPE_RE.match(attr):
            raise ValueError("%s: %s is not an attribute type" % (_show(text), _show(attr)))
        pos = eq + 1
        value = []
        if pos < n and text[pos] == "#":  # hexstring
            end = pos + 1
            while end < n and text[end] in _HEX:
                end += 1
            if end == pos + 1 or (end - pos - 1) % 2:
                raise ValueError("%s: bad hex value after %s=" % (_show(text), attr))
            value.append(text[pos:end].lower())
            pos = end
        else:
            start, trailing_space = pos, False
            while pos < n and text[pos] not in ",+":
                char = text[pos]
                trailing_space = False
                if ord(char) < 32 or ord(char) == 127:
                    raise ValueError("%s contains a control character" % _show(text))
                if char == "\\":
                    nxt = text[pos + 1:pos + 2]
                    if nxt and (nxt in _DN_SPECIAL or nxt in " #"):
                        value.append(nxt)
                        pos += 2
                        continue
                    pair = text[pos + 1:pos + 3]
                    if len(pair) == 2 and all(c in _HEX for c in pair):
                        value.append("\\" + pair.lower())
                        pos += 3
                        continue
                    raise ValueError("%s: bad escape at %s" % (_show(text), _show(text[pos:])))
                if char in _DN_SPECIAL:
                    raise ValueError("%s: %r must be escaped" % (_show(text), char))
                if char == " ":
                    if pos == start:
                        raise ValueError("%s: a value may not start with a space (no spaces after ',')"
                                         % _show(text))
                    trailing_space = True
                value.append(char)
                pos += 1
            if pos == start:
                raise ValueError("%s: %s= has no value" % (_show(text), attr))
            if trailing_space:
                raise ValueError("%s: a value may not end with a space (no spaces before ',')" % _show(text))
        avas.append((attr.lower(), "".join(value).lower()))
        if pos >= n:
            rdns.append(tuple(sorted(avas)))
            return rdns
        if text[pos] == ",":
            rdns.append(tuple(sorted(avas)))
            avas = []
        elif text[pos] != "+":
            raise ValueError("%s: unexpected %r" % (_show(text), text[pos]))
        pos += 1
        if pos >= n:
            raise ValueError("%s ends with a separator" % _show(text))


def _show(value, limit=60):
    """repr() of a value, shortened so that one bad value cannot flood the error list."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- reading a site file ---------------------------------------------------------


def load_site_file(path, max_bytes=MAX_FILE_BYTES, max_aliases=MAX_ALIASES):
    """The document in a YAML (or JSON) site file, read safely; SiteModelError naming the problem.

    Bounded: at most `max_bytes` bytes, `max_aliases` YAML aliases, MAX_DEPTH levels of nesting
    and MAX_VALUES values once aliases are expanded (a "billion laughs" document is refused
    instead of hanging whoever walks it). Only plain YAML types (SafeLoader).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SiteModelError(["%s: cannot be read (%s). Fix: give the path of a readable YAML file"
                              % (path, exc.strerror or exc)]) from None
    if len(data) > max_bytes:
        raise SiteModelError(["%s: is larger than %d bytes. Fix: a site model is a few kilobytes; give the "
                              "file that holds daskhpc_site" % (path, max_bytes)])
    return load_site_text(data, source=str(path), max_aliases=max_aliases, max_bytes=max_bytes)


def load_site_text(text, source="site model", max_aliases=MAX_ALIASES, max_bytes=MAX_FILE_BYTES):
    """load_site_file for text or bytes already read."""
    import yaml  # only the readers of site files need PyYAML; validate() does not

    if len(text) > max_bytes:
        raise SiteModelError(["%s: is larger than %d bytes. Fix: a site model is a few kilobytes"
                              % (source, max_bytes)])

    class Limit(Exception):
        pass

    class BoundedLoader(yaml.SafeLoader):
        aliases = 0
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > max_aliases:
                    raise Limit("uses more than %d YAML aliases. Fix: write the values out instead of "
                                "referring to anchors (aliases can expand a small file into billions of values)"
                                % max_aliases)
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise Limit("nests more than %d levels deep. Fix: a site model needs only a few levels" % MAX_DEPTH)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    loader = BoundedLoader(text)
    try:
        data = loader.get_single_data()
    except Limit as exc:
        raise SiteModelError(["%s: %s" % (source, exc)]) from None
    except yaml.YAMLError as exc:
        raise SiteModelError(["%s: is not valid YAML (%s). Fix: correct the YAML at the place named"
                              % (source, " ".join(str(exc).split()))]) from None
    finally:
        loader.dispose()
    try:
        _plain(data)  # counts values, with every alias expanded, against MAX_VALUES
    except _TooLarge as exc:
        raise SiteModelError(["%s: %s" % (source, exc)]) from None
    return data


# --- validation ----------------------------------------------------------------

_NODE_PREFIX = r"[A-Za-z][A-Za-z0-9._-]*"
_NODE_RANGES = r"\[\d{1,9}(?:-\d{1,9})?(?:,\d{1,9}(?:-\d{1,9})?)*\]"
_HOSTLIST_RE = re.compile(rf"{_NODE_PREFIX}(?:{_NODE_RANGES})?(?:,{_NODE_PREFIX}(?:{_NODE_RANGES})?)*\Z")
_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\Z")
_FEATURE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_DATABASE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._+-]+)+\Z")
_INTERFACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
_LDAP_URI_RE = re.compile(r"(ldaps?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?/?\Z")
_SCRAPE_RE = re.compile(r"(\d{1,5})([smh])\Z")
_SIZE_RE = re.compile(r"\d{1,15}(?:\.\d{1,6})? ?[A-Za-z]{0,3}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NAME_FIX = "use 1-32 characters: a lower-case letter, then lower-case letters, digits, '-' or '_'"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_hostname(value):
    """A DNS host name (RFC 1123) or an IP address."""
    if not isinstance(value, str) or not value or len(value) > 253:
        return False
    if _DNS_RE.match(value):
        return True
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _text_problem(value, max_len):
    """Why `value` is not a one-line text of at most max_len characters, or None."""
    if not isinstance(value, str):
        return "%s is not text" % _show(value)
    if not value.strip():
        return "is empty"
    if len(value) > max_len:
        return "is longer than %d characters" % max_len
    if _CONTROL_RE.search(value):
        return "%s contains a newline or another control character" % _show(value)
    if value != value.strip():
        return "%s starts or ends with white space" % _show(value)
    return None


def _path_problem(value, system_ok=True):
    """Why `value` is not a plain absolute path, or None."""
    if not isinstance(value, str):
        return "%s is not a path" % _show(value)
    if value == "/":
        return "'/' is the root directory"
    if len(value) > 1024:
        return "is longer than 1024 characters"
    if not _PATH_RE.match(value) or any(part in (".", "..") for part in value.split("/")):
        return "%s is not an absolute path of letters, digits, '.', '_', '+' and '-' (no '..', no trailing '/')" \
            % _show(value)
    if not system_ok and value in SYSTEM_DIRS:
        return "%s is a system directory" % value
    return None


class _TooLarge(Exception):
    pass


class _Checker:
    def __init__(self):
        self.errors = []
        self.node_ports = []  # (field, port, node) of emulated nodes, from _check_node_groups
        self.cores_known = True  # False when a node group's cores or nodes are in error (no cap checks then)

    def error(self, field, problem, fix):
        self.errors.append("%s: %s. Fix: %s" % (field, problem, fix))

    def unknown_keys(self, field, given, allowed):
        for key in sorted(set(given) - set(allowed)):
            self.error("%s.%s" % (field, _key(key)), "unknown field",
                       "remove it or use one of: %s" % ", ".join(sorted(allowed)))

    def name(self, field, value, reserved=(), what="name"):
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.error(field, "%s is not a valid %s" % (_show(value), what), _NAME_FIX)
            return False
        if value.lower() in reserved:
            self.error(field, "%r is reserved" % value, "choose another %s (%s is reserved)" % (what, value))
            return False
        return True

    def whole(self, field, value, lo, hi, fix=None):
        """A whole number (not a boolean) from lo to hi."""
        if not _is_int(value) or not lo <= value <= hi:
            what = "whole number" if not _is_int(value) else "number"
            self.error(field, "%s is not a %s from %d to %d" % (_show(value), what, lo, hi),
                       fix or "give a whole number from %d to %d" % (lo, hi))
            return False
        return True

    def text(self, field, value, max_len, fix):
        problem = _text_problem(value, max_len)
        if problem:
            self.error(field, problem, fix)
        return problem is None

    def path(self, field, value, fix, system_ok=True):
        problem = _path_problem(value, system_ok)
        if problem:
            self.error(field, problem, fix)
        return problem is None

    def boolean(self, field, value):
        if not isinstance(value, bool):
            self.error(field, "%s is not true or false" % _show(value), "write true or false")
            return False
        return True

    def choice(self, field, value, choices, what, fix):
        if not isinstance(value, str) or value not in choices:
            self.error(field, "%s is not %s" % (_show(value), what), fix)
            return False
        return True

    def unique_names(self, field, entries):
        """entries: (index, mapping) pairs from list_of_dicts."""
        seen = set()
        for i, item in entries:
            name = item.get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                self.error("%s[%d].name" % (field, i), "%r is used twice" % (name,), "give each entry its own name")
            seen.add(name)

    def list_of_dicts(self, field, value, required=True):
        """The entries of a list of mappings; entries that are not mappings are reported and left out."""
        if value is None and not required:
            return []
        if not isinstance(value, list) or not value:
            self.error(field, "must be a non-empty list of mappings", "list at least one entry, each with a name")
            return []
        if len(value) > MAX_ENTRIES:
            self.error(field, "has %d entries, more than %d" % (len(value), MAX_ENTRIES), "list fewer entries")
            return []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.error("%s[%d]" % (field, i), "%s is not a mapping" % _show(item),
                           "write each entry as a mapping with a name")
        return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]

    def name_list(self, field, value, what):
        """A list of distinct name strings (references), or None if it is not one."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(field, "%s is not a list" % _show(value), "write a YAML list of %s, e.g. [a, b]" % what)
            return None
        if len(value) > MAX_ENTRIES:
            self.error(field, "has %d entries, more than %d" % (len(value), MAX_ENTRIES), "list fewer %s" % what)
            return None
        good, seen = [], set()
        for j, item in enumerate(value):
            if not isinstance(item, str) or not NAME_RE.match(item):
                self.error("%s[%d]" % (field, j), "%s is not a valid name" % _show(item), _NAME_FIX)
            elif item in seen:
                self.error(field, "%r is listed twice" % item, "list each of the %s once" % what)
            else:
                seen.add(item)
                good.append(item)
        return good


def _key(key):
    return key if isinstance(key, str) and key.isprintable() and 0 < len(key) <= 64 else _show(key)


def _hosts(chk, field, value, budget):
    """The node names of a node group's host list, or [] after reporting why not."""
    fix = ('give a host list such as "n[1-4]" or "node01,node02": each name starts with a letter and holds '
           "letters, digits, '.', '-' or '_' (no spaces, '=', '/' or newlines)")
    if not isinstance(value, str) or not value:
        chk.error(field, "%s is not a host list" % _show(value), fix)
        return []
    if len(value) > MAX_FILE_BYTES:
        chk.error(field, "is longer than %d characters" % MAX_FILE_BYTES, "use ranges such as n[1-1000]")
        return []
    if not _HOSTLIST_RE.match(value):
        chk.error(field, "%s is not a host list" % _show(value), fix)
        return []
    try:
        parts = _parse_hostlist(value)
    except ValueError as exc:
        chk.error(field, str(exc), fix)
        return []
    size = sum(1 if spans is None else sum(hi - lo + 1 for lo, hi, _width in spans) for _prefix, spans in parts)
    if size > budget:
        chk.error(field, "names %d nodes; the model may hold at most %d nodes in all" % (size, MAX_NODES),
                  "check the ranges (a digit too many?) or split the site")
        return []
    for prefix, spans in parts:
        longest = len(prefix) + (max(max(width, len(str(hi))) for _lo, hi, width in spans) if spans else 0)
        if longest > 64:
            chk.error(field, "node names of %d characters are too long" % longest, "use names of at most 64 characters")
            return []
        if spans is None and prefix.lower() in RESERVED_NODE_NAMES:
            chk.error(field, "%r is reserved in slurm.conf" % prefix, "give the node another name")
            return []
    return expand_hostlist(value, limit=None)


def _check_node_groups(chk, model):
    entries = chk.list_of_dicts("node_groups", model.get("node_groups"))
    if not entries or len(entries) != len(model["node_groups"]):
        chk.cores_known = False
    groups = [g for _index, g in entries]
    chk.unique_names("node_groups", entries)
    node_owner = {}
    chk.node_ports = []
    ports = {}
    budget = MAX_NODES
    for i, group in entries:
        field = "node_groups[%d]" % i
        chk.unknown_keys(field, group, {"name", "nodes", "cpus", "memory_mb"} | set(NODE_GROUP_DEFAULTS))
        group.update({k: copy.deepcopy(v) for k, v in NODE_GROUP_DEFAULTS.items() if k not in group})
        chk.name(field + ".name", group.get("name"))
        if not chk.whole(field + ".cpus", group.get("cpus"), 1, MAX_CPUS,
                         "give the cores of one node (CPUs=), e.g. 64"):
            chk.cores_known = False
        chk.whole(field + ".memory_mb", group.get("memory_mb"), 1, MAX_MEMORY_MB,
                  "give the memory of one node in MB (RealMemory=), e.g. 257000")
        if group["features"] is None:
            group["features"] = []
        if not isinstance(group["features"], list) or len(group["features"]) > MAX_ENTRIES:
            chk.error(field + ".features", "%s is not a list of features" % _show(group["features"]),
                      "write a YAML list such as [a100, ib]")
        else:
            for j, feature in enumerate(group["features"]):
                if not isinstance(feature, str) or not _FEATURE_RE.match(feature):
                    chk.error("%s.features[%d]" % (field, j), "%s is not a SLURM feature" % _show(feature),
                              "use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
            if len(set(f for f in group["features"] if isinstance(f, str))) < len(group["features"]):
                chk.error(field + ".features", "lists a feature twice", "list each feature once")
        hosts = _hosts(chk, field + ".nodes", group.get("nodes"), budget)
        if not hosts:
            chk.cores_known = False
        budget -= len(hosts)
        group["node_names"] = hosts
        for host in hosts:
            if host in node_owner:
                chk.error(field + ".nodes", "node %s is already in node group %s" % (host, node_owner[host]),
                          "put each node in exactly one node group")
            node_owner[host] = group.get("name")
        hostname, port = group["hostname"], group["port"]
        if hostname is not None and not _is_hostname(hostname):
            chk.error(field + ".hostname", "%s is not a host name" % _show(hostname),
                      "give the DNS name of the host the emulated nodes run on, e.g. localhost")
        if port is not None:
            if hostname is None:
                chk.error(field + ".port", "port is set without hostname",
                          "set hostname too (emulated nodes) or remove port")
            if not chk.whole(field + ".port", port, 1, 65535, "give a TCP port from 1 to 65535"):
                pass
            elif port + max(len(hosts), 1) - 1 > 65535:
                chk.error(field + ".port", "the %d nodes would use ports %d-%d, past 65535"
                          % (len(hosts), port, port + len(hosts) - 1), "give a lower first port")
            else:
                for offset, host in enumerate(hosts):
                    if port + offset in ports:
                        chk.error(field + ".port", "port %d of %s is also used by %s"
                                  % (port + offset, host, ports[port + offset]),
                                  "give the node groups port ranges that do not overlap")
                    ports[port + offset] = host
                    chk.node_ports.append((field + ".port", port + offset, host))
        elif hostname is not None:
            chk.error(field + ".hostname", "hostname is set without port",
                      "emulated nodes share a host and need distinct ports: set port")
    return {g["name"]: g for g in groups if isinstance(g.get("name"), str) and NAME_RE.match(g["name"])}


def _check_groups(chk, model):
    entries = chk.list_of_dicts("groups", model.get("groups"), required=False)
    chk.unique_names("groups", entries)
    for i, group in entries:
        field = "groups[%d]" % i
        chk.unknown_keys(field, group, {"name", "description"})
        chk.name(field + ".name", group.get("name"), what="group name")
        if group.get("description") is None:
            group["description"] = ""
        elif group["description"] != "":
            chk.text(field + ".description", group["description"], 256, "write one line of at most 256 characters")
    return {g["name"] for _index, g in entries if isinstance(g.get("name"), str) and NAME_RE.match(g["name"])}


def _label(name):
    """A name for a message: as written when it is valid, else its (shortened) repr."""
    return name if isinstance(name, str) and NAME_RE.match(name) else _show(name)


def _pfield(i, part):
    """partitions.<name> when the partition has a valid name, else partitions[i]."""
    name = part.get("name")
    return "partitions.%s" % name if isinstance(name, str) and NAME_RE.match(name) else "partitions[%d]" % i


def _check_partitions(chk, model, node_groups, group_names):
    entries = chk.list_of_dicts("partitions", model.get("partitions"))
    parts = [p for _index, p in entries]
    chk.unique_names("partitions", entries)
    memberships = 0
    for i, part in entries:
        field = "partitions[%d]" % i
        chk.unknown_keys(field, part, {"name", "class", "node_groups"} | set(PARTITION_DEFAULTS))
        for key, value in PARTITION_DEFAULTS.items():
            part.setdefault(key, copy.deepcopy(value))
        chk.name(field + ".name", part.get("name"), RESERVED_PARTITION_NAMES, "partition name")
        if not isinstance(part.get("class"), str) or part.get("class") not in CLASSES:
            chk.error(field + ".class", "%s is not a partition class" % _show(part.get("class")),
                      "use class: production or class: burst")
        refs = chk.name_list(field + ".node_groups", part.get("node_groups"), "node groups")
        if refs is not None and not part.get("node_groups"):
            chk.error(field + ".node_groups", "must list at least one node group",
                      "name node groups from node_groups: %s" % ", ".join(sorted(node_groups)))
        part["node_groups_checked"] = refs or []
        part["nodes"] = []
        for ref in refs or []:
            if ref not in node_groups:
                chk.error(field + ".node_groups", "node group %r does not exist" % (ref,),
                          "use one of: %s, or add it under node_groups" % ", ".join(sorted(node_groups)))
            else:
                memberships += len(node_groups[ref]["node_names"])
                if memberships <= MAX_PARTITION_NODES:
                    part["nodes"].extend(node_groups[ref]["node_names"])
        if part["allow_groups"] is None:
            part["allow_groups"] = []
        allowed = chk.name_list(field + ".allow_groups", part["allow_groups"], "groups")
        for grp in allowed or []:
            if grp not in group_names:
                chk.error(field + ".allow_groups", "group %r is not declared" % (grp,),
                          "add it under groups (it must exist in the directory) or remove it here")
        if part.get("class") == "burst" and not part.get("allow_groups"):
            chk.error(field + ".allow_groups", "a burst partition must name who may use it",
                      "list the directory groups allowed to burst")
        if part["default"] is None:
            part["default"] = False
        chk.boolean(field + ".default", part["default"])
        try:
            part["max_time_minutes"] = slurm_time_minutes(part["max_time"])
        except ValueError as exc:
            chk.error(field + ".max_time", str(exc),
                      'write e.g. "2-00:00:00" (D-HH:MM:SS, HH:MM:SS, MM:SS or minutes; MM, SS below 60, '
                      'HH below 24 after days), more than zero and at most a year, or UNLIMITED')
            part["max_time_minutes"] = None
        tier = part.get("priority_tier")
        if tier is None:
            part["priority_tier"] = PRODUCTION_TIER_DEFAULT if part.get("class") == "production" else BURST_TIER_DEFAULT
        elif _is_int(tier) and tier > MAX_TIER:
            chk.error(field + ".priority_tier", "must be at most %d" % MAX_TIER, "pick a smaller tier")
        else:
            chk.whole(field + ".priority_tier", tier, 1, MAX_TIER, "give a whole number > 0")
    if memberships > MAX_PARTITION_NODES:
        chk.error("partitions", "hold %d node memberships in all, more than %d" % (memberships, MAX_PARTITION_NODES),
                  "use fewer partitions per node")
    production = [p for p in parts if p.get("class") == "production"]
    if parts and not production:
        chk.error("partitions", "there is no production partition",
                  "add a partition with class: production (burst only borrows production's nodes)")
    burst = [_label(p.get("name")) for p in parts if p.get("class") == "burst"]
    if len(burst) > 1:
        # The client submits to one burst partition; credentials and associations for a second one
        # would let users in that did not get a partition that takes their jobs.
        chk.error("partitions", "more than one burst partition (%s)" % ", ".join(burst),
                  "keep one partition with class: burst; give it the node groups of all and list every "
                  "group allowed to burst in its allow_groups")
    defaults = [_label(p.get("name")) for p in parts if p.get("default") is True]
    if len(defaults) > 1:
        chk.error("partitions", "more than one default partition (%s)" % ", ".join(defaults),
                  "set default: true on one partition only")
    for i, p in entries:
        if p.get("default") is True and p.get("class") == "burst":
            chk.error("%s.default" % _pfield(i, p), "a burst partition cannot be the default",
                      "make a production partition the default, so nobody lands on preemptible nodes by accident")
    if not defaults and production:
        production[0]["default"] = True
    for i, b in entries:
        if b.get("class") != "burst" or not _is_int(b.get("priority_tier")):
            continue
        for p in (p for p in production if _is_int(p.get("priority_tier"))):
            shared_groups = set(b["node_groups_checked"]) & set(p["node_groups_checked"])
            if shared_groups and b["priority_tier"] >= p["priority_tier"]:
                shared = sorted(n for g in shared_groups if g in node_groups for n in node_groups[g]["node_names"])
                listed = ",".join(shared[:16]) + (",... (%d nodes)" % len(shared) if len(shared) > 16 else "")
                chk.error("%s.priority_tier" % _pfield(i, b),
                          "burst tier %d is not below production partition %s's tier %d although they share %s"
                          % (b["priority_tier"], _label(p.get("name")), p["priority_tier"], listed),
                          "give burst partitions a lower priority_tier than every production partition "
                          "they share nodes with (leave priority_tier out for the defaults %d and %d)"
                          % (BURST_TIER_DEFAULT, PRODUCTION_TIER_DEFAULT))
    for p in parts:
        p.pop("node_groups_checked", None)
    return parts


def _check_sections(chk, model):
    sections = {}
    for section, defaults in SECTION_DEFAULTS.items():
        given = model.get(section)
        if given is None:
            given = {}
        if not isinstance(given, dict):
            chk.error(section, "must be a mapping", "write %s: as a mapping of its fields" % section)
            given = {}
        chk.unknown_keys(section, given, set(defaults))
        if section == "burst" and "per_user" in given:
            per_user = given["per_user"]
            if per_user is None:
                given = dict(given, per_user={})
            elif not isinstance(per_user, dict):
                chk.error("burst.per_user", "must be a mapping", "write per_user: as a mapping of max_cores, "
                          "max_jobs and max_submit_jobs")
                given = dict(given, per_user={})
            else:
                chk.unknown_keys("burst.per_user", per_user, set(defaults["per_user"]))
        sections[section] = _merge(defaults, given)
    return sections


def _check_burst(chk, burst, parts, total_cores):
    chk.name("burst.qos", burst["qos"], RESERVED_QOS, "QOS name")
    chk.name("burst.account", burst["account"], RESERVED_ACCOUNTS, "account name")
    chk.whole("burst.grace_time", burst["grace_time"], 0, MAX_GRACE_SECONDS,
              "give the seconds between SIGTERM and SIGKILL (GraceTime=), 0 to %d, e.g. 60" % MAX_GRACE_SECONDS)
    share = burst["max_share_percent"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 100:
        chk.error("burst.max_share_percent", "%s is not in (0, 100]" % _show(share),
                  "give the largest share of the cluster's cores burst work may hold, e.g. 50")
        share = None
    fixes = {"max_cores": "give the burst cores one user may hold, e.g. 16",
             "max_jobs": "give the burst jobs one user may run at once, e.g. 32",
             "max_submit_jobs": "give the burst jobs one user may have queued, e.g. 200"}
    for key, fix in fixes.items():
        chk.whole("burst.per_user.%s" % key, burst["per_user"][key], 1,
                  MAX_CPUS * MAX_NODES if key == "max_cores" else MAX_JOBS, fix)
    try:
        burst["max_walltime_minutes"] = slurm_time_minutes(burst["max_walltime"])
        if burst["max_walltime_minutes"] is None:
            chk.error("burst.max_walltime", "burst work must have a finite walltime", 'give e.g. "04:00:00"')
    except ValueError as exc:
        chk.error("burst.max_walltime", str(exc), 'write e.g. "04:00:00" (HH:MM:SS with MM, SS below 60, or '
                  'D-HH:MM:SS with HH below 24), more than zero and at most a year')
        burst["max_walltime_minutes"] = None
    walltime = burst["max_walltime_minutes"]
    if walltime and _is_int(burst["grace_time"]) and 0 <= burst["grace_time"] <= MAX_GRACE_SECONDS \
            and burst["grace_time"] >= walltime * 60:
        chk.error("burst.grace_time", "%d seconds is not shorter than burst.max_walltime" % burst["grace_time"],
                  "give a grace time of seconds to minutes, e.g. 60")
    burst["max_cores"] = int(total_cores * share / 100) if share else 0
    if not chk.cores_known:
        share = None  # the cluster's size is unknown: the cap checks would only add noise
    if share and burst["max_cores"] < 1:
        chk.error("burst.max_share_percent", "%s%% of %d cores is less than one core" % (share, total_cores),
                  "raise the share or add nodes")
    per_user = burst["per_user"]["max_cores"]
    if _is_int(per_user) and share and per_user > burst["max_cores"] > 0:
        chk.error("burst.per_user.max_cores", "%d exceeds the burst cap of %d cores (%s%% of %d)"
                  % (per_user, burst["max_cores"], share, total_cores),
                  "lower per_user.max_cores or raise max_share_percent")
    for i, p in enumerate(parts):
        if p.get("class") == "burst" and walltime and p.get("max_time_minutes") \
                and p["max_time_minutes"] < walltime:
            chk.error("%s.max_time" % _pfield(i, p), "is shorter than burst.max_walltime",
                      "leave max_time out on burst partitions (it follows burst.max_walltime) or make them agree")
        if p.get("class") == "burst":
            p["max_time_minutes"] = walltime
            p["max_time"] = format_slurm_minutes(walltime)


def _check_ca(chk, ca, model):
    if ca["name"] is None:
        ca["name"] = "%s internal CA" % model.get("name")
    else:
        chk.text("ca.name", ca["name"], 64, "give the CA's name (its certificates' CN), one line of at most 64 "
                 "characters")
    chk.path("ca.dir", ca["dir"], "give an absolute directory of its own, e.g. /etc/daskhpc/ca", system_ok=False)
    chk.choice("ca.key_type", ca["key_type"], KEY_TYPES, "supported", "use one of: %s" % ", ".join(KEY_TYPES))
    days_ok = [
        chk.whole("ca.host_cert_days", ca["host_cert_days"], 1, MAX_HOST_CERT_DAYS,
                  "give the days host certificates are valid, at most %d, e.g. 90" % MAX_HOST_CERT_DAYS),
        chk.whole("ca.user_cert_days", ca["user_cert_days"], 1, MAX_USER_CERT_DAYS,
                  "give the days user certificates are valid, at most %d, e.g. 7" % MAX_USER_CERT_DAYS),
        chk.whole("ca.renew_before_days", ca["renew_before_days"], 1, MAX_HOST_CERT_DAYS,
                  "give the days before expiry a certificate is renewed, e.g. 2"),
    ]
    if all(days_ok):
        if ca["renew_before_days"] >= ca["user_cert_days"]:
            chk.error("ca.renew_before_days", "is not shorter than user_cert_days",
                      "renew some days before expiry, e.g. 2 for 7-day user certificates")
        if ca["renew_before_days"] >= ca["host_cert_days"]:
            chk.error("ca.host_cert_days", "%d is not longer than renew_before_days (%d): every run would renew"
                      % (ca["host_cert_days"], ca["renew_before_days"]),
                      "give host certificates more days than the renewal window, e.g. 90")


def _check_ldap(chk, ldap):
    uri = ldap["uri"]
    if uri is not None:
        match = _LDAP_URI_RE.match(uri) if isinstance(uri, str) else None
        host = match.group(2).strip("[]") if match else None
        if not match or not _is_hostname(host) or (match.group(3) and not 0 < int(match.group(3)) <= 65535):
            chk.error("ldap.uri", "%s is not an LDAP URI" % _show(uri),
                      "write one URI, ldaps://host[:port] or ldap://host[:port], e.g. ldaps://ldap.example.org")
        for key in ("base_dn", "user_base", "group_base"):
            if not ldap[key]:
                chk.error("ldap.%s" % key, "is required when ldap.uri is set", "give the DN")
    chk.boolean("ldap.start_tls", ldap["start_tls"])
    dns = {}
    for key in ("base_dn", "user_base", "group_base", "bind_dn"):
        value = ldap[key]
        if value is None or value == "":
            continue
        if isinstance(value, str) and len(value) > 1024:
            chk.error("ldap.%s" % key, "is longer than 1024 characters", "give the DN")
            continue
        try:
            dns[key] = parse_dn(value)
        except ValueError as exc:
            chk.error("ldap.%s" % key, "is not a DN: %s" % exc,
                      "write an RFC 4514 DN such as ou=people,dc=example,dc=org (no spaces after commas)")
    base = dns.get("base_dn")
    for key in ("user_base", "group_base"):
        if base and key in dns and dns[key][-len(base):] != base:
            chk.error("ldap.%s" % key, "%s is not under base_dn %s" % (ldap[key], ldap["base_dn"]),
                      "give a DN that ends with base_dn")
    _check_ldap_schema(chk, ldap)


def _check_ldap_schema(chk, ldap):
    """ldap.schema and what must fit it; fills group_schema and login_attribute from it."""
    schema = ldap["schema"]
    if not chk.choice("ldap.schema", schema, tuple(LDAP_SCHEMAS), "a supported directory schema",
                      "use rfc2307 (OpenLDAP posixGroup/memberUid), rfc2307bis (groupOfNames, nested groups) "
                      "or ad (Active Directory)"):
        return
    implied = LDAP_SCHEMAS[schema]
    if ldap["group_schema"] is None:
        ldap["group_schema"] = implied["group_schema"]
    elif ldap["group_schema"] != implied["group_schema"]:
        chk.error("ldap.group_schema", "%s does not fit ldap.schema %s, whose groups are %s"
                  % (_show(ldap["group_schema"]), schema, implied["group_schema"]),
                  "leave group_schema out (it follows from schema), or set schema to %s"
                  % {"posixGroup": "rfc2307", "groupOfNames": "rfc2307bis", "group": "ad"}.get(
                      ldap["group_schema"], "the directory's schema"))
    if ldap["login_attribute"] is None:
        ldap["login_attribute"] = implied["login_attributes"][0]
    elif ldap["login_attribute"] not in implied["login_attributes"]:
        chk.error("ldap.login_attribute", "%s is not a login name in a %s directory"
                  % (_show(ldap["login_attribute"]), schema),
                  "use %s, or leave it out" % " or ".join(implied["login_attributes"]))
    chk.whole("ldap.cache_seconds", ldap["cache_seconds"], MIN_CACHE_SECONDS, MAX_CACHE_SECONDS,
              "give the most seconds a leaver may keep access, e.g. 300")
    if schema == "ad" and ldap["uri"] is not None:
        if isinstance(ldap["uri"], str) and ldap["uri"].startswith("ldap://") and ldap["start_tls"] is False:
            chk.error("ldap.start_tls", "is false with an ldap:// URI, but Active Directory refuses simple "
                      "binds without TLS", "use an ldaps:// URI (port 636) or set start_tls: true")
        if not ldap["bind_dn"]:
            chk.error("ldap.bind_dn", "is empty, but Active Directory answers no anonymous searches",
                      "give the DN of a read-only service account, e.g. "
                      "CN=daskhpc-reader,CN=Users,DC=ad,DC=example,DC=org")


# A pip requirement as the site environment takes it: a name, optional extras, an optional version specifier.
# No URLs, paths or options: the wheelhouse is built from the package index only.
_REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?"
                             r"((===?|!=|<=?|>=?|~=)[A-Za-z0-9.*+!_-]+(,(===?|!=|<=?|>=?|~=)[A-Za-z0-9.*+!_-]+)*)?")


def _check_packages(chk, packages, field="dask.packages"):
    if not isinstance(packages, list) or len(packages) > MAX_ENTRIES:
        chk.error(field, "%s is not a list of at most %d packages" % (_show(packages), MAX_ENTRIES),
                  "write a YAML list of pip requirements, e.g. [pandas, pyarrow, \"bokeh>=3.1\"]")
        return
    for i, item in enumerate(packages):
        if not isinstance(item, str) or not _REQUIREMENT_RE.fullmatch(item.replace(" ", "")):
            chk.error("%s[%d]" % (field, i), "%s is not a package requirement" % _show(item),
                      "write a package name with optional extras and version, e.g. pandas or \"bokeh>=3.1\"")


def _check_services(chk, sections, model):
    ca, dask, metrics, accounting = sections["ca"], sections["dask"], sections["metrics"], sections["accounting"]
    _check_ca(chk, ca, model)
    chk.choice("dask.tls", dask["tls"], ("required", "optional"), "a TLS mode",
               "use required (recommended) or optional")
    chk.whole("dask.worker_cores", dask["worker_cores"], 1, MAX_CPUS, "give the cores of one Dask worker, e.g. 1")
    memory = dask["worker_memory"]
    try:
        if isinstance(memory, bool) or not (_is_int(memory) or isinstance(memory, str) and _SIZE_RE.match(memory)):
            raise ValueError("%s is not a size" % _show(memory))
        size = parse_size_bytes(memory)
        if not MIN_WORKER_MEMORY <= size <= MAX_WORKER_MEMORY:
            raise ValueError("%s is not from 1MiB to 1PiB" % _show(memory))
    except ValueError as exc:
        chk.error("dask.worker_memory", str(exc), "write e.g. 2GiB (from 1MiB to 1PiB)")
    chk.path("dask.python", dask["python"], "give the absolute path of the workers' Python, e.g. "
             "/opt/daskhpc/venv/bin/python")
    if dask["interface"] is not None and (not isinstance(dask["interface"], str)
                                          or not _INTERFACE_RE.match(dask["interface"])
                                          or dask["interface"] in (".", "..")):
        chk.error("dask.interface", "%s is not a network interface name" % _show(dask["interface"]),
                  "give an interface such as ib0 or eth0 (1-15 letters, digits, '_', '.', '-'), or leave it out")
    if dask["contact"] is not None:
        chk.text("dask.contact", dask["contact"], 256, "say in one line whom data scientists should ask")
    _check_packages(chk, dask["packages"])

    ports = []
    if accounting["host"] is None:
        accounting["host"] = "localhost"
    elif not _is_hostname(accounting["host"]):
        chk.error("accounting.host", "%s is not a host name" % _show(accounting["host"]),
                  "give the DNS name or address of the slurmdbd host, e.g. dbd01.example.org")
    if chk.whole("accounting.port", accounting["port"], 1, 65535, "give a TCP port from 1 to 65535, e.g. 6819"):
        ports.append(("accounting.port", accounting["port"]))
    if not isinstance(accounting["database"], str) or not _DATABASE_RE.match(accounting["database"]):
        chk.error("accounting.database", "%s is not a database name" % _show(accounting["database"]),
                  "use 1-64 letters, digits or '_', starting with a letter or '_', e.g. slurm_acct_db")
    for key in ("exporter_port", "prometheus_port", "discovery_port"):
        if chk.whole("metrics.%s" % key, metrics[key], 1, 65535, "give a port from 1 to 65535"):
            ports.append(("metrics.%s" % key, metrics[key]))
    if _check_jupyterhub(chk, sections["jupyterhub"], model):
        ports.append(("jupyterhub.port", sections["jupyterhub"]["port"]))
    owners = {port: "%s (fixed in slurm.conf)" % name for port, name in SLURM_PORTS.items()}
    for field, port in ports:
        if port in owners:
            chk.error(field, "port %d is also %s" % (port, owners[port]), "give every service its own port")
        else:
            owners[port] = field
    for field, port, host in chk.node_ports:
        if port in owners:
            chk.error(field, "port %d of node %s is also %s" % (port, host, owners[port]),
                      "give emulated nodes ports no service uses")
    interval = metrics["scrape_interval"]
    match = _SCRAPE_RE.match(interval) if isinstance(interval, str) else None
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_SCRAPE_SECONDS:
        chk.error("metrics.scrape_interval", "%s is not a Prometheus duration from 1s to 1h" % _show(interval),
                  "write e.g. 30s or 1m")
    chk.path("metrics.dask_targets_dir", metrics["dask_targets_dir"],
             "give an absolute directory of its own, e.g. /var/lib/daskhpc/dask-targets", system_ok=False)
    _check_ldap(chk, sections["ldap"])


def _check_jupyterhub(chk, hub, model):
    """The jupyterhub section; True when its port is one to check against the other services'."""
    chk.boolean("jupyterhub.enabled", hub["enabled"])
    _check_packages(chk, hub["packages"], "jupyterhub.packages")
    names = [re.match(r"[A-Za-z0-9._-]*", p).group(0).lower() for p in hub["packages"] if isinstance(p, str)] \
        if isinstance(hub["packages"], list) else []
    if hub["enabled"] is True and isinstance(hub["packages"], list) and "jupyterhub" not in names:
        chk.error("jupyterhub.packages", "does not list jupyterhub", "keep jupyterhub (and jupyterlab) in the list")
    if hub["enabled"] is True and not any(
            isinstance(p, dict) and p.get("class") == "burst" and p.get("allow_groups")
            for p in (model.get("partitions") if isinstance(model.get("partitions"), list) else [])):
        chk.error("jupyterhub.enabled", "no burst partition allows a group, and JupyterHub admits the burst groups",
                  "give the burst partition allow_groups, or leave jupyterhub disabled")
    return chk.whole("jupyterhub.port", hub["port"], 1, 65535, "give a TCP port from 1 to 65535, e.g. 8443")


def _merge(defaults, given):
    merged = copy.deepcopy(defaults)
    for key, value in (given or {}).items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _plain(value, budget=None, depth=0):
    """A deep copy made of plain dicts, lists and scalars (Ansible hands filters lazy, tagged types).

    _TooLarge past MAX_VALUES values (every use of a YAML alias counts) or MAX_DEPTH levels.
    """
    if budget is None:
        budget = [MAX_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge("holds more than %d values (YAML aliases expanding?). Fix: a site model is small; "
                        "write the values out instead of nesting aliases" % MAX_VALUES)
    if depth > MAX_DEPTH:
        raise _TooLarge("nests more than %d levels deep. Fix: a site model needs only a few levels" % MAX_DEPTH)
    if isinstance(value, dict):
        return {str(k): _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, budget, depth + 1) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


# --- the typed model ----------------------------------------------------------------
#
# What the admin wrote (with the defaults above filled in) is kept apart from what is derived from it.
# The section classes have no defaults of their own: the *_DEFAULTS tables are the only ones.


@dataclasses.dataclass(frozen=True)
class NodeGroup:
    name: str
    nodes: str  # the host list as written, e.g. "cn[001-032]"
    cpus: int
    memory_mb: int
    features: tuple
    hostname: str | None  # emulated nodes: the host their slurmd runs on
    port: int | None  # emulated nodes: the first node's slurmd port


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    description: str


@dataclasses.dataclass(frozen=True)
class Partition:
    name: str
    kind: str  # `class` in the site file: production or burst
    node_groups: tuple
    allow_groups: tuple
    default: bool
    max_time: str | int
    priority_tier: int


@dataclasses.dataclass(frozen=True)
class PerUser:
    max_cores: int
    max_jobs: int
    max_submit_jobs: int


@dataclasses.dataclass(frozen=True)
class Burst:
    qos: str
    account: str
    grace_time: int
    max_walltime: str | int
    max_share_percent: int | float
    per_user: PerUser


@dataclasses.dataclass(frozen=True)
class Accounting:
    host: str
    port: int
    database: str


@dataclasses.dataclass(frozen=True)
class Ldap:
    uri: str | None
    start_tls: bool
    base_dn: str | None
    user_base: str | None
    group_base: str | None
    bind_dn: str | None
    schema: str
    group_schema: str
    login_attribute: str
    cache_seconds: int


@dataclasses.dataclass(frozen=True)
class Ca:
    name: str
    dir: str
    key_type: str
    host_cert_days: int
    user_cert_days: int
    renew_before_days: int


@dataclasses.dataclass(frozen=True)
class Metrics:
    exporter_port: int
    prometheus_port: int
    scrape_interval: str
    dask_targets_dir: str
    discovery_port: int


@dataclasses.dataclass(frozen=True)
class Dask:
    contact: str | None
    python: str
    interface: str | None
    worker_cores: int
    worker_memory: str | int
    tls: str
    packages: tuple  # the site environment's data-science stack (pip requirements)


@dataclasses.dataclass(frozen=True)
class Jupyterhub:
    enabled: bool
    port: int
    packages: tuple  # pip requirements installed into the site environment on login hosts


SECTION_CLASSES = {"burst": Burst, "accounting": Accounting, "ldap": Ldap, "ca": Ca, "metrics": Metrics,
                   "dask": Dask, "jupyterhub": Jupyterhub}


@dataclasses.dataclass(frozen=True)
class Site:
    """The site as the admin wrote it, with defaults filled in."""

    name: str
    scheduler: str
    node_groups: tuple  # of NodeGroup
    groups: tuple  # of Group
    partitions: tuple  # of Partition
    burst: Burst
    accounting: Accounting
    ldap: Ldap
    ca: Ca
    metrics: Metrics
    dask: Dask
    jupyterhub: Jupyterhub


@dataclasses.dataclass(frozen=True)
class Derived:
    """What follows from the site. Per-entry values are tuples in the order of Site's lists."""

    total_cores: int
    burst_max_cores: int  # burst.max_share_percent of total_cores
    burst_max_walltime_minutes: int | float | None
    node_names: tuple  # per node group: its expanded host list
    partition_nodes: tuple  # per partition: the nodes of its node groups
    partition_max_time_minutes: tuple  # per partition; None is UNLIMITED
    burst_partitions: tuple
    production_partitions: tuple


@dataclasses.dataclass(frozen=True)
class SiteModel(Mapping):
    """The validated site model: `site` as written, `derived` from it, `errors` when validated leniently.

    It is also a read-only mapping of `as_dict()`, the plain form that playbooks/validate.yml publishes
    as the fact `daskhpc_model` and that the views below take, so templates and Python read the same keys.
    """

    site: Site
    derived: Derived
    errors: tuple = ()

    @property
    def valid(self):
        return not self.errors

    @classmethod
    def from_normalised(cls, model, errors=()):
        """The typed model of the dict _check (or _salvage) built."""
        groups = tuple(NodeGroup(name=g["name"], nodes=g["nodes"], cpus=g["cpus"], memory_mb=g["memory_mb"],
                                 features=tuple(g["features"] or ()), hostname=g["hostname"], port=g["port"])
                       for g in model["node_groups"])
        parts = tuple(Partition(name=p["name"], kind=p["class"], node_groups=tuple(p["node_groups"] or ()),
                                allow_groups=tuple(p["allow_groups"] or ()), default=p["default"],
                                max_time=p["max_time"], priority_tier=p["priority_tier"])
                      for p in model["partitions"])
        sections = {}
        for name, kind in SECTION_CLASSES.items():
            values = {f.name: model[name][f.name] for f in dataclasses.fields(kind)}
            if kind is Burst:
                values["per_user"] = PerUser(**values["per_user"])
            if kind in (Dask, Jupyterhub):
                values["packages"] = tuple(values["packages"])
            sections[name] = kind(**values)
        site = Site(name=model["name"], scheduler=model["scheduler"], node_groups=groups,
                    groups=tuple(Group(name=g["name"], description=g["description"]) for g in model["groups"]),
                    partitions=parts, **sections)
        derived = Derived(
            total_cores=model["total_cores"],
            burst_max_cores=model["burst"]["max_cores"],
            burst_max_walltime_minutes=model["burst"]["max_walltime_minutes"],
            node_names=tuple(tuple(g["node_names"]) for g in model["node_groups"]),
            partition_nodes=tuple(tuple(p["nodes"]) for p in model["partitions"]),
            partition_max_time_minutes=tuple(p["max_time_minutes"] for p in model["partitions"]),
            burst_partitions=tuple(p.name for p in parts if p.kind == "burst"),
            production_partitions=tuple(p.name for p in parts if p.kind == "production"),
        )
        return cls(site=site, derived=derived, errors=tuple(errors))

    def as_dict(self):
        """The plain (JSON-ready) form: the site's fields with the derived ones beside them."""
        return copy.deepcopy(self._plain_view)

    @cached_property
    def _plain_view(self):
        site, derived = self.site, self.derived
        burst = dataclasses.asdict(site.burst)
        burst.update(max_walltime_minutes=derived.burst_max_walltime_minutes, max_cores=derived.burst_max_cores)
        view = {
            "name": site.name,
            "scheduler": site.scheduler,
            "node_groups": [dict(dataclasses.asdict(g), features=list(g.features), node_names=list(names))
                            for g, names in zip(site.node_groups, derived.node_names)],
            "groups": [dataclasses.asdict(g) for g in site.groups],
            "partitions": [{"name": p.name, "class": p.kind, "node_groups": list(p.node_groups),
                            "allow_groups": list(p.allow_groups), "default": p.default, "max_time": p.max_time,
                            "priority_tier": p.priority_tier, "nodes": list(nodes), "max_time_minutes": minutes}
                           for p, nodes, minutes in zip(site.partitions, derived.partition_nodes,
                                                        derived.partition_max_time_minutes)],
            "burst": burst,
            "total_cores": derived.total_cores,
            "burst_partitions": list(derived.burst_partitions),
            "production_partitions": list(derived.production_partitions),
        }
        for name in ("accounting", "ldap", "ca", "metrics", "dask", "jupyterhub"):
            view[name] = dataclasses.asdict(getattr(site, name))
        view["dask"]["packages"] = list(site.dask.packages)
        view["jupyterhub"]["packages"] = list(site.jupyterhub.packages)
        return view

    def __getitem__(self, key):
        return self._plain_view[key]

    def __iter__(self):
        return iter(self._plain_view)

    def __len__(self):
        return len(self._plain_view)


def _check(site):
    """(normalised model dict, errors): every check run, defaults filled and derived values added.

    The dict is None when the document is not a mapping or is too large to walk.
    """
    chk = _Checker()
    if not isinstance(site, dict):
        return None, ["daskhpc_site: %s is not a mapping. Fix: define daskhpc_site in group_vars "
                      "(see inventories/example-site)" % ("null" if site is None else type(site).__name__)]
    try:
        model = _plain(site)
    except _TooLarge as exc:
        return None, ["daskhpc_site: %s" % exc]
    chk.unknown_keys("daskhpc_site", model, TOP_LEVEL_KEYS)
    chk.name("name", model.get("name"), what="cluster name")
    if not isinstance(model.get("scheduler"), str) or model.get("scheduler") not in SCHEDULERS:
        chk.error("scheduler", "%s is not supported" % _show(model.get("scheduler")), "use slurm or pbs")
    node_groups = _check_node_groups(chk, model)
    group_names = _check_groups(chk, model)
    parts = _check_partitions(chk, model, node_groups, group_names)
    sections = _check_sections(chk, model)
    total_cores = sum(g["cpus"] * len(g["node_names"]) for g in node_groups.values()
                      if _is_int(g.get("cpus")) and 0 < g["cpus"] <= MAX_CPUS)
    _check_burst(chk, sections["burst"], parts, total_cores)
    _check_services(chk, sections, model)
    model.update(sections)
    model["node_groups"] = list(node_groups.values())
    model["groups"] = model.get("groups") or []
    model["partitions"] = parts
    model["total_cores"] = total_cores
    return model, chk.errors


def validate(site, lenient=False):
    """The typed SiteModel of `site`, or SiteModelError listing every problem.

    lenient=True never raises: it returns ``(model, errors)``, where an invalid document gives a
    best-effort model of what was written (values of the wrong type replaced by their defaults), so
    the audit can still report on it. Only an empty ``errors`` means the model may be deployed.
    """
    normalised, errors = _check(site)
    if not errors:
        model = SiteModel.from_normalised(normalised)
        return (model, []) if lenient else model
    if not lenient:
        raise SiteModelError(errors)
    return SiteModel.from_normalised(_salvage(site), errors), list(errors)


def _salvage(raw):
    """A normalised-shaped dict of an invalid model: what was written, wrong types replaced by defaults."""
    raw = raw if isinstance(raw, dict) else {}
    try:
        raw = _plain(raw)
    except _TooLarge:
        raw = {}
    model = {"name": _str_or(raw.get("name"), ""), "scheduler": _str_or(raw.get("scheduler"), "")}
    for section, defaults in SECTION_DEFAULTS.items():
        merged = _merge(defaults, raw.get(section) if isinstance(raw.get(section), dict) else {})
        for key, default in defaults.items():  # a value of the wrong type falls back to its default
            if merged.get(key) is not None and default is not None and not _same_kind(merged[key], default):
                merged[key] = copy.deepcopy(default)
        model[section] = merged
    groups = _salvage_node_groups(raw.get("node_groups"))
    parts = _salvage_partitions(raw.get("partitions"), {g["name"]: g["node_names"] for g in groups})
    model["node_groups"] = groups
    model["partitions"] = parts
    model["groups"] = [dict({"description": ""}, **g) for g in _mappings(raw.get("groups"))
                       if isinstance(g.get("name"), str)]
    model["total_cores"] = sum(g["cpus"] * len(g["node_names"]) for g in groups)
    burst = model["burst"]
    try:
        burst["max_walltime_minutes"] = slurm_time_minutes(burst["max_walltime"])
    except ValueError:
        burst["max_walltime_minutes"] = None
    share = burst["max_share_percent"]
    burst["max_cores"] = int(model["total_cores"] * share / 100) if 0 < share <= 100 else 0
    return model


def _salvage_node_groups(value):
    groups = []
    for group in _mappings(value):
        if isinstance(group.get("name"), str):
            groups.append(dict(NODE_GROUP_DEFAULTS, **{
                "name": group["name"], "nodes": _str_or(group.get("nodes"), ""),
                "cpus": group["cpus"] if _is_int(group.get("cpus")) else 0,
                "memory_mb": group["memory_mb"] if _is_int(group.get("memory_mb")) else 0,
                "features": _strings(group.get("features")),
                "node_names": _hosts(_Checker(), "", group.get("nodes"), MAX_NODES)}))
    return groups


def _salvage_partitions(value, nodes_of):
    parts = []
    for part in _mappings(value):
        if not isinstance(part.get("name"), str):
            continue
        part = dict(PARTITION_DEFAULTS, **part)
        part["class"] = _str_or(part.get("class"), "")
        part["node_groups"] = _strings(part.get("node_groups"))
        part["allow_groups"] = _strings(part.get("allow_groups"))
        part["default"] = part.get("default") is True
        part["nodes"] = [n for ref in part["node_groups"] for n in nodes_of.get(ref, [])]
        try:
            part["max_time_minutes"] = slurm_time_minutes(part["max_time"])
        except ValueError:
            part["max_time_minutes"] = None
        if not _is_int(part.get("priority_tier")):
            part["priority_tier"] = PRODUCTION_TIER_DEFAULT if part["class"] == "production" else BURST_TIER_DEFAULT
        parts.append(part)
    return parts


def _str_or(value, default):
    return value if isinstance(value, str) else default


def _same_kind(value, default):
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _mappings(value):
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _strings(value):
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


# --- views: one per consumer, each taking the validated model (SiteModel or its published dict) ---

# slurm_qos option -> sacctmgr's name for it (the audit compares with what sacctmgr prints)
QOS_SACCTMGR_NAMES = {
    "max_tres_per_user": "MaxTRESPerUser",
    "max_jobs_per_user": "MaxJobsPerUser",
    "max_submit_jobs_per_user": "MaxSubmitJobsPerUser",
    "grp_tres": "GrpTRES",
    "max_wall": "MaxWall",
    "flags": "Flags",
}


def qos_args(model):
    """The burst QOS as onprem.daskhpc.slurm_qos's options: the policy enforced inside the scheduler."""
    burst = model["burst"]
    per_user = burst["per_user"]
    return {
        "name": burst["qos"],
        "description": "daskhpc burst policy for %s" % model["name"],
        "max_tres_per_user": "cpu=%d" % per_user["max_cores"],
        "max_jobs_per_user": per_user["max_jobs"],
        "max_submit_jobs_per_user": per_user["max_submit_jobs"],
        "grp_tres": "cpu=%d" % burst["max_cores"],
        "max_wall": format_slurm_minutes(burst["max_walltime_minutes"]),
        "flags": ["DenyOnLimit"],
    }


def burst_qos(model):
    """qos_args in sacctmgr's field names (as `sacctmgr show qos` prints them)."""
    args = qos_args(model)
    fields = {"name": args.pop("name"), "description": args.pop("description")}
    fields.update((QOS_SACCTMGR_NAMES[key], value) for key, value in args.items())
    fields["Flags"] = ",".join(fields["Flags"])
    return fields


def burst_account_args(model):
    """The burst account as onprem.daskhpc.slurm_account's options: limited to the burst QOS."""
    burst = model["burst"]
    return {"name": burst["account"], "cluster": model["name"], "qos": [burst["qos"]], "default_qos": burst["qos"]}


def allowed_groups(model, partition_class=None):
    """Sorted directory groups allowed on the partitions of `partition_class` (every partition when None)."""
    return sorted({g for p in model["partitions"] if partition_class in (None, p["class"]) for g in p["allow_groups"]})


def burst_groups(model):
    """Who may burst: the groups allowed on the burst partition, sorted.

    The one answer the directory sync, the credentials, the audit and the client configuration share.
    """
    return allowed_groups(model, "burst")


def burst_partition(model):
    """The burst partition's name (validation allows at most one), or None."""
    return model["burst_partitions"][0] if model["burst_partitions"] else None


def ldap_settings(model):
    """The directory's settings (the ldap section, defaults filled in)."""
    return dict(model["ldap"])


def ca_settings(model):
    """The CA's settings (the ca section, defaults filled in)."""
    return dict(model["ca"])


def scrape_seconds(model):
    """The Prometheus scrape interval in seconds."""
    interval = str(model["metrics"]["scrape_interval"])
    return int(interval[:-1]) * {"s": 1, "m": 60, "h": 3600}[interval[-1]]


def exporter_config(model, ledger_path=None, *, listen_address="127.0.0.1", min_interval_seconds=10,
                    slow_interval_seconds=60, slurm_bin_dir="", tls=None):
    """The exporter's configuration (daskhpc/exporter/server.py reads it).

    A scrape must end before Prometheus gives up on it (scrape_timeout: 10 s, or the scrape interval
    if that is shorter), so the exporter's budget is 80 % of that and one command may take 5/8 of it.
    """
    budget = round(0.8 * min(10, scrape_seconds(model)), 1)
    return {
        "site": model["name"],
        "scheduler": model["scheduler"],
        "listen_address": listen_address,
        "listen_port": model["metrics"]["exporter_port"],
        "min_interval_seconds": int(min_interval_seconds),
        "slow_interval_seconds": int(slow_interval_seconds),
        "burst_partitions": list(model["burst_partitions"]),
        "production_partitions": list(model["production_partitions"]),
        "burst_max_share_ratio": model["burst"]["max_share_percent"] / 100.0,
        "burst_max_cores": model["burst"]["max_cores"],
        "ledger_path": ledger_path or ledger_file(model),
        "slurm_bin_dir": slurm_bin_dir,
        "scrape_budget_seconds": budget,
        "command_timeout_seconds": round(budget * 5 / 8, 1),
        # cert, key, ca, crl and allow (the names in Prometheus's service certificate); without it the
        # exporter serves loopback only.
        "tls": dict(tls) if tls else None,
    }


def ledger_file(model):
    """The CA's issuance ledger."""
    return model["ca"]["dir"].rstrip("/") + "/ledger.jsonl"


def alert_rule_vars(model):
    """Thresholds the alert rules derive from the model."""
    grace = int(model["burst"]["grace_time"])
    return {
        "site": model["name"],
        # preemption takes up to GraceTime; allow two scrapes and a minute of scheduling on top
        "pending_behind_burst_for": "%ds" % (grace + 2 * scrape_seconds(model) + 60),
        "renew_before_seconds": int(model["ca"]["renew_before_days"]) * 86400,
        "burst_max_cores": model["burst"]["max_cores"],
    }


def python_venv(model):
    """The virtual environment that holds dask.python (``.../venv/bin/python`` -> ``.../venv``); ValueError if none."""
    python = model["dask"]["python"]
    parts = python.rstrip("/").split("/")
    if len(parts) < 3 or parts[-2] != "bin":
        raise ValueError("dask.python: %r is not a virtual environment's bin/python. Fix: give e.g. "
                         "/opt/daskhpc/venv/bin/python" % python)
    return "/".join(parts[:-2])


def slurm_nodes(model):
    """NodeName lines' fields, one entry per node."""
    nodes = []
    for group in model["node_groups"]:
        for offset, name in enumerate(group["node_names"]):
            node = {"NodeName": name, "CPUs": group["cpus"], "RealMemory": group["memory_mb"]}
            if group["hostname"]:
                node["NodeHostname"] = group["hostname"]
                node["NodeAddr"] = "127.0.0.1" if group["hostname"] == "localhost" else group["hostname"]
                node["Port"] = group["port"] + offset
            if group["features"]:
                node["Features"] = ",".join(group["features"])
            nodes.append(node)
    return nodes


def slurm_partitions(model):
    """PartitionName lines' fields, in the model's order."""
    lines = []
    for part in model["partitions"]:
        fields = {
            "PartitionName": part["name"],
            "Nodes": ",".join(part["nodes"]),
            "Default": "YES" if part["default"] else "NO",
            "MaxTime": format_slurm_minutes(part["max_time_minutes"]),
            "PriorityTier": part["priority_tier"],
            "State": "UP",
        }
        if part["allow_groups"]:
            fields["AllowGroups"] = ",".join(part["allow_groups"])
        if part["class"] == "burst":
            fields["PreemptMode"] = "REQUEUE"
            fields["GraceTime"] = model["burst"]["grace_time"]
            fields["QOS"] = model["burst"]["qos"]
            fields["AllowQos"] = model["burst"]["qos"]
        else:
            # Nothing may ever preempt production work, and burst's account and QOS stay off it.
            fields["PreemptMode"] = "OFF"
            fields["DenyAccounts"] = model["burst"]["account"]
            fields["DenyQos"] = model["burst"]["qos"]
        lines.append(fields)
    return lines


def inventory_problems(model, compute_hosts, group="compute"):
    """Where the inventory's compute hosts and the model's node groups disagree, each with its fix.

    A node is matched by its short name (``cn001`` for ``cn001.hpc.example.org``); emulated nodes by
    the host they run on (node_groups[].hostname).
    """
    wanted = {}  # inventory host (short name) -> the node_groups field that needs it
    for i, node_group in enumerate(model["node_groups"]):
        field = "node_groups[%d].nodes" % i
        for host in [node_group["hostname"]] if node_group["hostname"] else node_group["node_names"]:
            wanted.setdefault(host, field)
    have = {}
    for host in compute_hosts:
        have.setdefault(str(host).split(".", 1)[0], str(host))
    problems = []
    missing = sorted(h for h in wanted if h not in have and h not in ("localhost", "127.0.0.1"))
    for host in missing[:16]:
        field = wanted[host]
        problems.append("%s: node %s has no host in the inventory group %s. Fix: add %s (or its FQDN) to the "
                        "inventory group %s, or remove it from %s" % (field, host, group, host, group, field))
    if len(missing) > 16:
        problems.append("node_groups: %d more nodes have no host in the inventory group %s. Fix: as above"
                        % (len(missing) - 16, group))
    extra = sorted(have[h] for h in have if h not in wanted)
    for host in extra[:16]:
        problems.append("inventory group %s: host %s is no node of any node group. Fix: add it to a node "
                        "group's nodes in daskhpc_site, or take it out of the group %s" % (group, host, group))
    if len(extra) > 16:
        problems.append("inventory group %s: %d more hosts are no node of any node group. Fix: as above"
                        % (group, len(extra) - 16))
    return problems


def emulated_nodes(model, hostname=None):
    """Nodes whose slurmd runs on a shared host (the lab), with their ports."""
    return [
        {"name": n["NodeName"], "port": n["Port"]}
        for n in slurm_nodes(model)
        if "Port" in n and (hostname is None or n["NodeHostname"] == hostname)
    ]


def client_config(model, paths=None):
    """The `daskhpc` section of the data scientists' Dask configuration, limits included.

    daskhpc/daskhpc.yaml holds the package's defaults for the same keys; tests/unit keeps them equal
    to what this gives for a model that sets nothing.
    """
    burst = model["burst"]
    dask = model["dask"]
    partition = burst_partition(model)
    config = {
        "site": model["name"],
        "scheduler": model["scheduler"],
        "partition": partition,
        "qos": burst["qos"],
        "account": burst["account"],
        "python": dask["python"],
        "interface": dask["interface"],
        "worker-cores": dask["worker_cores"],
        "worker-memory": dask["worker_memory"],
        "max-walltime": format_slurm_minutes(burst["max_walltime_minutes"]),
        "grace-time": burst["grace_time"],
        "limits": dict({
            "max-cores-per-user": burst["per_user"]["max_cores"],
            "max-jobs-per-user": burst["per_user"]["max_jobs"],
            "max-cores-burst": burst["max_cores"],
        }, **_job_limits(model, partition)),
        "allowed-groups": burst_groups(model),
        "tls": dask["tls"],
        "metrics-targets-dir": model["metrics"]["dask_targets_dir"],
        "metrics-discovery-port": model["metrics"]["discovery_port"],
    }
    if dask["contact"]:
        config["contact"] = dask["contact"]
    config.update(paths or {})
    return config


def _job_limits(model, partition):
    """A job runs on one node: the largest burst node bounds a job's cores and memory."""
    nodes = {n for p in model["partitions"] if p["name"] == partition for n in p["nodes"]}
    groups = [g for g in model["node_groups"] if nodes & set(g["node_names"])]
    if not groups:
        return {}
    return {"max-cores-per-job": max(g["cpus"] for g in groups),
            "max-memory-per-job": "%dMiB" % max(g["memory_mb"] for g in groups)}


def leaver_caches(model):
    """How ldap.cache_seconds is split between the caches a leaver's membership passes through.

    sssd keeps an entry up to entry_cache_timeout, its fast in-memory cache may serve it a further
    memcache_timeout, and slurmctld re-reads AllowGroups members every GroupUpdateTime: each gets a
    third, so the three together stay within the bound.
    """
    third = int(model["ldap"]["cache_seconds"]) // 3
    return {"entry_cache_timeout": third, "memcache_timeout": third, "group_update_time": third}
