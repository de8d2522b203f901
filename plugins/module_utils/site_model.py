# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site model: validation and everything derived from it.

This file is the one place where the site model is checked and interpreted.
It is pure Python (no Ansible imports) so that modules, filters, the
``daskhpc`` package and the tests all share it unchanged.
"""

from __future__ import annotations

import copy
import re

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
SCHEDULERS = ("slurm", "pbs")
CLASSES = ("production", "burst")
PRODUCTION_TIER_DEFAULT = 10
BURST_TIER_DEFAULT = 1
KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096")

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
    "group_schema": "posixGroup",
}
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
}
SECTION_DEFAULTS = {
    "burst": BURST_DEFAULTS,
    "accounting": ACCOUNTING_DEFAULTS,
    "ldap": LDAP_DEFAULTS,
    "ca": CA_DEFAULTS,
    "metrics": METRICS_DEFAULTS,
    "dask": DASK_DEFAULTS,
}
TOP_LEVEL_KEYS = {"name", "scheduler", "node_groups", "groups", "partitions"} | set(SECTION_DEFAULTS)


class SiteModelError(ValueError):
    """Raised with every problem found, each naming its field and its fix."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("site model is invalid:\n" + "\n".join("  - " + e for e in self.errors))


# --- small parsers -----------------------------------------------------------

_HOSTLIST_PART = re.compile(r"([^\[,]+)(?:\[([^\]]+)\])?(?:,|$)")


def expand_hostlist(expr):
    """Expand a SLURM-style host list such as ``n[1-4,7],gpu01``."""
    hosts = []
    pos = 0
    expr = str(expr).strip()
    while pos < len(expr):
        match = _HOSTLIST_PART.match(expr, pos)
        if not match or match.end() == pos:
            raise ValueError("cannot parse host list %r near %r" % (expr, expr[pos:]))
        prefix, ranges = match.group(1), match.group(2)
        if ranges is None:
            hosts.append(prefix)
        else:
            for part in ranges.split(","):
                lo, _, hi = part.partition("-")
                hi = hi or lo
                if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                    raise ValueError("bad range %r in host list %r" % (part, expr))
                width = len(lo)
                hosts.extend("%s%0*d" % (prefix, width, i) for i in range(int(lo), int(hi) + 1))
        pos = match.end()
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


# --- validation ----------------------------------------------------------------


def _merge(defaults, given):
    merged = copy.deepcopy(defaults)
    for key, value in (given or {}).items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Checker:
    def __init__(self):
        self.errors = []

    def error(self, field, problem, fix):
        self.errors.append("%s: %s. Fix: %s" % (field, problem, fix))

    def unknown_keys(self, field, given, allowed):
        for key in sorted(set(given) - set(allowed)):
            self.error("%s.%s" % (field, key), "unknown field",
                       "remove it or use one of: %s" % ", ".join(sorted(allowed)))

    def name(self, field, value):
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.error(field, "%r is not a valid name" % (value,),
                       "use 1-32 characters: a lower-case letter, then lower-case letters, digits, '-' or '_'")
            return False
        return True

    def positive_int(self, field, value, allow_zero=False):
        ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
        if not ok:
            self.error(field, "%r is not a %s whole number" % (value, "non-negative" if allow_zero else "positive"),
                       "give a whole number%s" % (" >= 0" if allow_zero else " > 0"))
        return ok

    def unique_names(self, field, items):
        seen = set()
        for i, item in enumerate(items):
            name = item.get("name")
            if name in seen:
                self.error("%s[%d].name" % (field, i), "%r is used twice" % (name,), "give each entry its own name")
            seen.add(name)

    def list_of_dicts(self, field, value, required=True):
        if value is None and not required:
            return []
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            self.error(field, "must be a non-empty list of mappings", "list at least one entry, each with a name")
            return []
        return value


def _check_node_groups(chk, model):
    groups = chk.list_of_dicts("node_groups", model.get("node_groups"))
    chk.unique_names("node_groups", groups)
    node_owner = {}
    ports = {}
    for i, group in enumerate(groups):
        field = "node_groups[%d]" % i
        chk.unknown_keys(field, group, {"name", "nodes", "cpus", "memory_mb"} | set(NODE_GROUP_DEFAULTS))
        group.update({k: copy.deepcopy(v) for k, v in NODE_GROUP_DEFAULTS.items() if k not in group})
        chk.name(field + ".name", group.get("name"))
        chk.positive_int(field + ".cpus", group.get("cpus"))
        chk.positive_int(field + ".memory_mb", group.get("memory_mb"))
        try:
            hosts = expand_hostlist(group.get("nodes", ""))
            if not hosts:
                raise ValueError("no nodes")
        except ValueError as exc:
            chk.error(field + ".nodes", str(exc), 'give a host list such as "n[1-4]" or "node01,node02"')
            hosts = []
        group["node_names"] = hosts
        for host in hosts:
            if host in node_owner:
                chk.error(field + ".nodes", "node %s is already in node group %s" % (host, node_owner[host]),
                          "put each node in exactly one node group")
            node_owner[host] = group.get("name")
        if group["port"] is not None:
            if group["hostname"] is None:
                chk.error(field + ".port", "port is set without hostname",
                          "set hostname too (emulated nodes) or remove port")
            if chk.positive_int(field + ".port", group["port"]):
                for offset, host in enumerate(hosts):
                    port = group["port"] + offset
                    if port in ports:
                        chk.error(field + ".port", "port %d of %s is also used by %s" % (port, host, ports[port]),
                                  "give the node groups port ranges that do not overlap")
                    ports[port] = host
        elif group["hostname"] is not None:
            chk.error(field + ".hostname", "hostname is set without port",
                      "emulated nodes share a host and need distinct ports: set port")
    return {g.get("name"): g for g in groups}


def _check_groups(chk, model):
    groups = chk.list_of_dicts("groups", model.get("groups"), required=False)
    chk.unique_names("groups", groups)
    for i, group in enumerate(groups):
        chk.unknown_keys("groups[%d]" % i, group, {"name", "description"})
        chk.name("groups[%d].name" % i, group.get("name"))
        group.setdefault("description", "")
    return {g.get("name") for g in groups}


def _check_partitions(chk, model, node_groups, group_names):
    parts = chk.list_of_dicts("partitions", model.get("partitions"))
    chk.unique_names("partitions", parts)
    for i, part in enumerate(parts):
        field = "partitions[%d]" % i
        chk.unknown_keys(field, part, {"name", "class", "node_groups"} | set(PARTITION_DEFAULTS))
        for key, value in PARTITION_DEFAULTS.items():
            part.setdefault(key, copy.deepcopy(value))
        chk.name(field + ".name", part.get("name"))
        if part.get("class") not in CLASSES:
            chk.error(field + ".class", "%r is not a partition class" % (part.get("class"),),
                      "use class: production or class: burst")
        refs = part.get("node_groups")
        if not isinstance(refs, list) or not refs:
            chk.error(field + ".node_groups", "must list at least one node group",
                      "name node groups from node_groups: %s" % ", ".join(sorted(node_groups)))
            refs = []
        part["nodes"] = []
        for ref in refs:
            if ref not in node_groups:
                chk.error(field + ".node_groups", "node group %r does not exist" % (ref,),
                          "use one of: %s, or add it under node_groups" % ", ".join(sorted(node_groups)))
            else:
                part["nodes"].extend(node_groups[ref]["node_names"])
        for grp in part.get("allow_groups") or []:
            if grp not in group_names:
                chk.error(field + ".allow_groups", "group %r is not declared" % (grp,),
                          "add it under groups (it must exist in the directory) or remove it here")
        if part.get("class") == "burst" and not part.get("allow_groups"):
            chk.error(field + ".allow_groups", "a burst partition must name who may use it",
                      "list the directory groups allowed to burst")
        try:
            part["max_time_minutes"] = parse_duration_minutes(part["max_time"])
        except ValueError as exc:
            chk.error(field + ".max_time", str(exc), 'write e.g. "2-00:00:00" or UNLIMITED')
            part["max_time_minutes"] = None
        tier = part.get("priority_tier")
        if tier is None:
            part["priority_tier"] = PRODUCTION_TIER_DEFAULT if part.get("class") == "production" else BURST_TIER_DEFAULT
        elif chk.positive_int(field + ".priority_tier", tier) and tier > 65533:
            chk.error(field + ".priority_tier", "must be at most 65533", "pick a smaller tier")
    production = [p for p in parts if p.get("class") == "production"]
    if parts and not production:
        chk.error("partitions", "there is no production partition",
                  "add a partition with class: production (burst only borrows production's nodes)")
    defaults = [p.get("name") for p in parts if p.get("default")]
    if len(defaults) > 1:
        chk.error("partitions", "more than one default partition (%s)" % ", ".join(defaults),
                  "set default: true on one partition only")
    for p in parts:
        if p.get("default") and p.get("class") == "burst":
            chk.error("partitions.%s.default" % p.get("name"), "a burst partition cannot be the default",
                      "make a production partition the default, so nobody lands on preemptible nodes by accident")
    if not defaults and production:
        production[0]["default"] = True
    for b in (p for p in parts if p.get("class") == "burst"):
        for p in production:
            shared = set(b["nodes"]) & set(p["nodes"])
            if shared and isinstance(b["priority_tier"], int) and isinstance(p["priority_tier"], int) \
                    and b["priority_tier"] >= p["priority_tier"]:
                chk.error("partitions.%s.priority_tier" % b["name"],
                          "burst tier %d is not below production partition %s's tier %d although they share %s"
                          % (b["priority_tier"], p["name"], p["priority_tier"], ",".join(sorted(shared))),
                          "give burst partitions a lower priority_tier than every production partition "
                          "they share nodes with (leave priority_tier out for the defaults %d and %d)"
                          % (BURST_TIER_DEFAULT, PRODUCTION_TIER_DEFAULT))
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
        if section == "burst" and isinstance(given.get("per_user"), dict):
            chk.unknown_keys("burst.per_user", given["per_user"], set(defaults["per_user"]))
        sections[section] = _merge(defaults, given)
    return sections


def _check_burst(chk, burst, parts, total_cores):
    chk.name("burst.qos", burst["qos"])
    chk.name("burst.account", burst["account"])
    chk.positive_int("burst.grace_time", burst["grace_time"], allow_zero=True)
    share = burst["max_share_percent"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 100:
        chk.error("burst.max_share_percent", "%r is not in (0, 100]" % (share,),
                  "give the largest share of the cluster's cores burst work may hold, e.g. 50")
        share = None
    for key in ("max_cores", "max_jobs", "max_submit_jobs"):
        chk.positive_int("burst.per_user.%s" % key, burst["per_user"][key])
    try:
        burst["max_walltime_minutes"] = parse_duration_minutes(burst["max_walltime"])
        if burst["max_walltime_minutes"] is None:
            chk.error("burst.max_walltime", "burst work must have a finite walltime", 'give e.g. "04:00:00"')
    except ValueError as exc:
        chk.error("burst.max_walltime", str(exc), 'write e.g. "04:00:00"')
        burst["max_walltime_minutes"] = None
    burst["max_cores"] = int(total_cores * share / 100) if share else 0
    if share and burst["max_cores"] < 1:
        chk.error("burst.max_share_percent", "%s%% of %d cores is less than one core" % (share, total_cores),
                  "raise the share or add nodes")
    per_user = burst["per_user"]["max_cores"]
    if isinstance(per_user, int) and share and per_user > burst["max_cores"] > 0:
        chk.error("burst.per_user.max_cores", "%d exceeds the burst cap of %d cores (%s%% of %d)"
                  % (per_user, burst["max_cores"], share, total_cores),
                  "lower per_user.max_cores or raise max_share_percent")
    for p in parts:
        if p.get("class") == "burst" and burst["max_walltime_minutes"] and p.get("max_time_minutes") \
                and p["max_time_minutes"] < burst["max_walltime_minutes"]:
            chk.error("partitions.%s.max_time" % p["name"], "is shorter than burst.max_walltime",
                      "leave max_time out on burst partitions (it follows burst.max_walltime) or make them agree")
        if p.get("class") == "burst":
            p["max_time_minutes"] = burst["max_walltime_minutes"]
            p["max_time"] = format_slurm_minutes(burst["max_walltime_minutes"])


def _check_services(chk, sections, model):
    ca, dask, metrics = sections["ca"], sections["dask"], sections["metrics"]
    if ca["key_type"] not in KEY_TYPES:
        chk.error("ca.key_type", "%r is not supported" % (ca["key_type"],), "use one of: %s" % ", ".join(KEY_TYPES))
    for key in ("host_cert_days", "user_cert_days", "renew_before_days"):
        chk.positive_int("ca.%s" % key, ca[key])
    if isinstance(ca["renew_before_days"], int) and isinstance(ca["user_cert_days"], int) \
            and ca["renew_before_days"] >= ca["user_cert_days"]:
        chk.error("ca.renew_before_days", "is not shorter than user_cert_days",
                  "renew some days before expiry, e.g. 2 for 7-day user certificates")
    if ca["name"] is None:
        ca["name"] = "%s internal CA" % model.get("name")
    if dask["tls"] not in ("required", "optional"):
        chk.error("dask.tls", "%r is not a TLS mode" % (dask["tls"],),
                  "use required (recommended) or optional")
    chk.positive_int("dask.worker_cores", dask["worker_cores"])
    try:
        parse_size_bytes(dask["worker_memory"])
    except ValueError as exc:
        chk.error("dask.worker_memory", str(exc), "write e.g. 2GiB")
    for key in ("exporter_port", "prometheus_port", "discovery_port"):
        if chk.positive_int("metrics.%s" % key, metrics[key]) and metrics[key] > 65535:
            chk.error("metrics.%s" % key, "is not a TCP port", "give a port from 1 to 65535")
    if not re.match(r"^\d+[smh]$", str(metrics["scrape_interval"])):
        chk.error("metrics.scrape_interval", "%r is not a Prometheus duration" % (metrics["scrape_interval"],),
                  "write e.g. 30s or 1m")
    ldap = sections["ldap"]
    if ldap["uri"] is not None:
        if not re.match(r"^ldaps?://", str(ldap["uri"])):
            chk.error("ldap.uri", "%r is not an LDAP URI" % (ldap["uri"],), "write e.g. ldaps://ldap.example.org")
        for key in ("base_dn", "user_base", "group_base"):
            if not ldap[key]:
                chk.error("ldap.%s" % key, "is required when ldap.uri is set", "give the DN")
        if ldap["group_schema"] not in ("posixGroup", "groupOfNames"):
            chk.error("ldap.group_schema", "%r is not supported" % (ldap["group_schema"],),
                      "use posixGroup (memberUid) or groupOfNames (member)")
    if sections["accounting"]["host"] is None:
        sections["accounting"]["host"] = "localhost"


def _plain(value):
    """A deep copy made of plain dicts, lists and scalars (Ansible hands filters lazy, tagged types)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def validate(site):
    """Return the normalised, derived model, or raise SiteModelError listing every problem."""
    chk = _Checker()
    if not isinstance(site, dict):
        raise SiteModelError(["daskhpc_site: is not a mapping. Fix: define daskhpc_site in group_vars "
                              "(see inventories/example-site)"])
    model = _plain(site)
    chk.unknown_keys("daskhpc_site", model, TOP_LEVEL_KEYS)
    chk.name("name", model.get("name"))
    if model.get("scheduler") not in SCHEDULERS:
        chk.error("scheduler", "%r is not supported" % (model.get("scheduler"),), "use slurm or pbs")
    node_groups = _check_node_groups(chk, model)
    group_names = _check_groups(chk, model)
    parts = _check_partitions(chk, model, node_groups, group_names)
    sections = _check_sections(chk, model)
    total_cores = sum(g["cpus"] * len(g["node_names"]) for g in node_groups.values()
                      if isinstance(g.get("cpus"), int))
    _check_burst(chk, sections["burst"], parts, total_cores)
    _check_services(chk, sections, model)
    if chk.errors:
        raise SiteModelError(chk.errors)
    model.update(sections)
    model["node_groups"] = list(node_groups.values())
    model["groups"] = model.get("groups") or []
    model["partitions"] = parts
    model["total_cores"] = total_cores
    model["burst_partitions"] = [p["name"] for p in parts if p["class"] == "burst"]
    model["production_partitions"] = [p["name"] for p in parts if p["class"] == "production"]
    return model


# --- derivations used by roles, the client and the reports --------------------


def burst_qos(model):
    """The QOS that enforces the burst policy inside the scheduler, as sacctmgr fields."""
    burst = model["burst"]
    per_user = burst["per_user"]
    return {
        "name": burst["qos"],
        "description": "daskhpc burst policy for %s" % model["name"],
        "MaxTRESPerUser": "cpu=%d" % per_user["max_cores"],
        "MaxJobsPerUser": per_user["max_jobs"],
        "MaxSubmitJobsPerUser": per_user["max_submit_jobs"],
        "GrpTRES": "cpu=%d" % burst["max_cores"],
        "MaxWall": format_slurm_minutes(burst["max_walltime_minutes"]),
        "Flags": "DenyOnLimit",
    }


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


def emulated_nodes(model, hostname=None):
    """Nodes whose slurmd runs on a shared host (the lab), with their ports."""
    return [
        {"name": n["NodeName"], "port": n["Port"]}
        for n in slurm_nodes(model)
        if "Port" in n and (hostname is None or n["NodeHostname"] == hostname)
    ]


def client_config(model, paths=None):
    """The `daskhpc` section of the data scientists' Dask configuration."""
    burst = model["burst"]
    dask = model["dask"]
    partition = model["burst_partitions"][0] if model["burst_partitions"] else None
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
        "limits": {
            "max-cores-per-user": burst["per_user"]["max_cores"],
            "max-jobs-per-user": burst["per_user"]["max_jobs"],
            "max-cores-burst": burst["max_cores"],
        },
        "allowed-groups": next((p["allow_groups"] for p in model["partitions"] if p["name"] == partition), []),
        "tls": dask["tls"],
        "metrics-targets-dir": model["metrics"]["dask_targets_dir"],
        "metrics-discovery-port": model["metrics"]["discovery_port"],
    }
    if dask["contact"]:
        config["contact"] = dask["contact"]
    config.update(paths or {})
    return config
