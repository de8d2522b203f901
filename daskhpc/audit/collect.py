# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn raw site facts into the audit report (a plain dict matching schema/report-v1.json).

`collect(inputs)` takes every source explicitly (see `INPUT_KEYS`), so tests and the
benchmark feed synthetic data and the CLI or the playbook feed what they gathered.
A missing source is a value ``{"unavailable": "reason"}``: its sections stay empty and the
report's `sources` table says why. Every list is sorted and every id is derived from
content, so the same state gives the same report.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from daskhpc.audit import certs as certmod
from daskhpc.audit import findings as findmod
from daskhpc.audit import licences as licmod
from daskhpc.audit import probe
from daskhpc.audit import pbs as pbsaudit
from daskhpc.core import site_model
from daskhpc.core.pki import parse_ledger
from daskhpc.core.slurm import parsable2
from daskhpc.scheduler import parse_int
from daskhpc.scheduler import pbs as pbsbatch
from daskhpc.scheduler.slurm import parse_scontrol_partitions, parse_timestamp, split_list

SCHEMA_VERSION = "1.0"
SCHEMA_ID = "https://onprem.daskhpc/schemas/audit/report-v1.json"
INPUT_KEYS = ("site", "inventory", "hosts", "scheduler", "directory", "ledger", "drift",
              "collection_version", "period", "policy")
SCHEDULER_SOURCES = ("scontrol_partitions", "sacctmgr_qos", "sacctmgr_assoc", "sacct")


def is_unavailable(value):
    return value is None or (isinstance(value, dict) and "unavailable" in value)


def reason(value):
    if value is None:
        return "not given"
    return value["unavailable"]


class Sources:
    """Records, per source, whether it was read and why not."""

    def __init__(self):
        self.rows = {}

    def ok(self, name, detail=""):
        self.rows[name] = {"source": name, "status": "ok", "detail": detail}

    def missing(self, name, why):
        self.rows[name] = {"source": name, "status": "not available", "detail": "not available: %s" % why}

    def take(self, name, value, detail=""):
        """The value if present (recorded ok), else None (recorded missing)."""
        if is_unavailable(value):
            self.missing(name, reason(value))
            return None
        self.ok(name, detail)
        return value

    def sorted(self):
        return [self.rows[k] for k in sorted(self.rows)]


# --- site model ---------------------------------------------------------------


def site_section(raw, sources):
    """The validated model; if it is invalid, the model as written (site_model's lenient mode) plus its errors."""
    raw = sources.take("site_model", raw)
    if raw is None:
        return None, []
    model, errors = site_model.validate(raw, lenient=True)
    if errors:
        sources.rows["site_model"]["detail"] = "invalid: %d error(s), report uses the model as written" % len(
            errors)
    return model, sorted(errors)


# --- inventory ----------------------------------------------------------------

VERSION_KEYS = ("slurm", "munge", "slapd", "python", "dask")


def inventory_section(inventory, hosts, sources):
    inventory = sources.take("inventory", inventory) or {}
    host_facts = hosts if isinstance(hosts, dict) and not is_unavailable(hosts) else {}
    if is_unavailable(hosts):
        sources.missing("host_facts", reason(hosts))
    rows = []
    for host in sorted(set(inventory) | set(host_facts)):
        facts = host_facts.get(host)
        if facts is None or is_unavailable(facts):
            why = reason(facts) if facts is not None else "no facts gathered (run playbooks/audit.yml)"
            sources.missing("host_facts:%s" % host, why)
            facts = {}
        else:
            sources.ok("host_facts:%s" % host)
        versions = facts.get("versions") or {}
        row = {"host": host, "roles": sorted(inventory.get(host) or []), "os": facts.get("os", "")}
        for key in VERSION_KEYS:
            value = versions.get(key, "")
            row[key] = "not available: %s" % value["unavailable"] if isinstance(value, dict) else str(value)
        rows.append(row)
    return rows, host_facts


# --- partitions and QOS ---------------------------------------------------------


def partitions_section(model, live_text, sources):
    live = {}
    text = sources.take("scontrol_partitions", live_text)
    if text is not None:
        live = {p["PartitionName"]: p for p in parse_scontrol_partitions(text)}
    modelled = {p["PartitionName"]: p for p in (site_model.slurm_partitions(model) if _valid(model) else [])}
    classes = {p["name"]: p.get("class", "") for p in (model or {}).get("partitions", [])}
    as_written = {p["name"]: p for p in (model or {}).get("partitions", [])}
    rows = []
    for name in sorted(set(live) | set(classes)):
        want, have = modelled.get(name, {}), live.get(name, {})
        written = as_written.get(name, {})
        rows.append({
            "name": name,
            "class": classes.get(name, "unknown (not in the site model)"),
            "in_model": name in classes,
            "in_scheduler": name in live,
            "nodes": have.get("Nodes") or want.get("Nodes") or ",".join(written.get("nodes", [])),
            "total_cpus": parse_int(have.get("TotalCPUs")),
            "allow_groups_model": sorted(written.get("allow_groups") or []),
            "allow_groups_scheduler": split_list(have.get("AllowGroups")) if have else [],
            "priority_tier_model": written.get("priority_tier"),
            "priority_tier_scheduler": parse_int(have.get("PriorityTier")),
            "preempt_mode_model": want.get("PreemptMode", ""),
            "preempt_mode_scheduler": have.get("PreemptMode", ""),
            "grace_time_scheduler": parse_int(have.get("GraceTime")),
            "max_time_model": want.get("MaxTime", written.get("max_time", "")),
            "max_time_scheduler": have.get("MaxTime", ""),
            "qos_model": want.get("QOS", ""),
            "qos_scheduler": "" if have.get("QoS") in (None, "N/A") else have.get("QoS"),
            "state_scheduler": have.get("State", ""),
        })
    return rows


def qos_section(model, live_text, sources):
    text = sources.take("sacctmgr_qos", live_text)
    live = {q["Name"]: q for q in parsable2(text, probe.QOS_FIELDS)} if text is not None else {}
    expected = {}
    if _valid(model) and model.get("scheduler") == "slurm":
        want = site_model.burst_qos(model)
        expected[want["name"]] = want
    rows = []
    for name in sorted(set(live) | set(expected)):
        have, want = live.get(name, {}), expected.get(name, {})
        rows.append({
            "name": name,
            "in_model": name in expected,
            "in_scheduler": name in live,
            "priority": parse_int(have.get("Priority")),
            "preempt": have.get("Preempt", ""),
            "preempt_mode": have.get("PreemptMode", ""),
            "grace_time": have.get("GraceTime", ""),
            "max_tres_per_user": have.get("MaxTRESPU", ""),
            "max_jobs_per_user": have.get("MaxJobsPU", ""),
            "max_submit_per_user": have.get("MaxSubmitPU", ""),
            "grp_tres": have.get("GrpTRES", ""),
            "max_wall": have.get("MaxWall", ""),
            "flags": have.get("Flags", ""),
            "model_max_tres_per_user": want.get("MaxTRESPerUser", ""),
            "model_max_jobs_per_user": str(want.get("MaxJobsPerUser", "")),
            "model_grp_tres": want.get("GrpTRES", ""),
            "model_max_wall": want.get("MaxWall", ""),
        })
    return rows


# --- access review ----------------------------------------------------------------


def associations(text):
    rows = [a for a in parsable2(text, probe.ASSOC_FIELDS) if a.get("User")]
    return sorted(({"cluster": a["Cluster"], "account": a["Account"], "user": a["User"],
                    "partition": a["Partition"], "qos": ",".join(split_list(a["QOS"])),
                    "default_qos": a["DefaultQOS"]} for a in rows),
                  key=lambda a: (a["user"], a["account"], a["partition"], a["cluster"]))


def _grants(assoc, partition, burst_qos):
    """Does this association let its user run in the partition? Burst also needs the burst QOS."""
    if assoc["partition"] not in ("", partition["name"]):
        return False
    if partition.get("class") == "burst":
        return burst_qos in assoc["qos"].split(",")
    return True


# root and the SlurmUser bypass AllowGroups by design; their associations are not mismatches.
ADMIN_USERS = ("root", "slurm")


def access_section(model, assoc_text, directory, sources, admins=ADMIN_USERS):
    assoc_text = sources.take("sacctmgr_assoc", assoc_text)
    directory = sources.take("directory", directory,
                             detail=(directory or {}).get("source", "") if isinstance(directory, dict) else "")
    assocs = associations(assoc_text) if assoc_text is not None else []
    members_of = (directory or {}).get("groups") or {}
    # Through which chain of groups each member is in an allowed group (read from LDAP; the name
    # service flattens nested groups and cannot say).
    chains = (directory or {}).get("via") or {}
    known_users = (directory or {}).get("users") or {}
    burst_qos = (model or {}).get("burst", {}).get("qos", "burst")
    access, mismatches = [], []
    for part in sorted((model or {}).get("partitions", []), key=lambda p: p["name"]):
        allowed = sorted(part.get("allow_groups") or [])
        holders = {a["user"] for a in assocs if _grants(a, part, burst_qos)}
        # Only an association aimed at this partition (or carrying the burst QOS) is a grant beyond policy;
        # a cluster-wide one is how production access normally works and AllowGroups still applies.
        explicit = {a["user"] for a in assocs if _grants(a, part, burst_qos)
                    and (a["partition"] == part["name"] or part.get("class") == "burst")}
        via = defaultdict(list)
        for group in allowed:
            for user in members_of.get(group) or []:
                via[user].append(" via ".join(chains.get(group, {}).get(user) or [group]))
        # Listed: every member of an allowed group, and whoever holds a grant aimed at this partition.
        for user in sorted(set(via) | explicit):
            in_dir = known_users.get(user)
            row = {"partition": part["name"], "class": part.get("class", ""), "user": user,
                   "groups": sorted(via.get(user, [])), "association": user in holders,
                   "in_directory": "unknown" if in_dir is None else ("yes" if in_dir else "no")}
            access.append(row)
            if directory is None or assoc_text is None or user in admins:
                continue  # a mismatch needs both sides; administrators bypass group checks
            if in_dir is False and user in holders:
                mismatches.append(_mismatch(part, user, "association of a user not in the directory",
                                            "the user holds an association but the directory no longer knows them"))
            elif allowed and user in explicit and not via.get(user):
                mismatches.append(_mismatch(part, user, "association without group membership",
                                            "association grants the partition but the user is in none of: %s"
                                            % ", ".join(allowed)))
            elif via.get(user) and user not in holders:
                mismatches.append(_mismatch(part, user, "member without association",
                                            "member of %s but holds no association%s for this partition"
                                            % (", ".join(via[user]),
                                               " with QOS %s" % burst_qos if part.get("class") == "burst" else "")))
        for group in allowed:
            if directory is not None and members_of.get(group, []) is None:
                mismatches.append({"partition": part["name"], "user": "", "group": group,
                                   "kind": "allowed group not in the directory",
                                   "detail": "group %s is allowed on %s but the directory has no such group"
                                   % (group, part["name"])})
    return access, assocs, sorted(mismatches, key=lambda m: (m["partition"], m["kind"], m["user"], m["group"]))


def _mismatch(part, user, kind, detail):
    return {"partition": part["name"], "user": user, "group": "", "kind": kind, "detail": detail}


# --- certificates -----------------------------------------------------------------


def certificates_section(ledger_text, host_facts, as_of, sources):
    ledger_text = sources.take("ca_ledger", ledger_text)
    entries, problems = parse_ledger(ledger_text) if ledger_text is not None else ({}, [])
    problems = ["ledger %s" % p for p in problems]
    rows = certmod.ledger_certificates(entries, as_of)
    for host in sorted(host_facts):
        facts = host_facts[host]
        if is_unavailable(facts):
            continue
        found, more = certmod.file_certificates(host, facts.get("certificates") or [], entries, as_of)
        rows += found
        problems += more
    if problems:
        sources.rows["certificate_files"] = {"source": "certificate_files", "status": "partial",
                                             "detail": "; ".join(sorted(problems))[:2000]}
    return sorted(rows, key=lambda r: r["id"])


# --- usage ----------------------------------------------------------------------


def sacct_runs(text):
    """sacct's allocations as runs: {user, partition, start, end, cpus, preempted} (as pbsbatch.accounting_runs)."""
    return [{"user": job["User"], "partition": job["Partition"].split(",")[0],
             "preempted": job["State"].split()[0] in ("PREEMPTED", "REQUEUED"),
             "start": parse_timestamp(job["Start"]), "end": parse_timestamp(job["End"]),
             "cpus": parse_int(job["AllocCPUS"]) or 0} for job in parsable2(text, probe.SACCT_FIELDS)]


def usage_section(model, sacct_text, since, until, sources, *, runs=None):
    """Usage from sacct (SLURM) or from `runs` already read (PBS: accounting_runs of the accounting log)."""
    if runs is None:
        sacct_text = sources.take("sacct", sacct_text)
        runs = sacct_runs(sacct_text) if sacct_text is not None else []
    burst_parts = set((model or {}).get("burst_partitions") or
                      [p["name"] for p in (model or {}).get("partitions", []) if p.get("class") == "burst"])
    step = timedelta(days=1) if (until - since) <= timedelta(days=62) else timedelta(days=7)
    buckets = []
    cursor = since
    while cursor < until:
        buckets.append(cursor)
        cursor += step
    by_up = defaultdict(lambda: {"jobs": 0, "core_seconds": 0.0, "preemptions": 0})
    share = defaultdict(lambda: [0.0, 0.0])  # bucket -> [burst, total] core seconds
    for job in runs:
        partition = job["partition"]
        key = (job["user"], partition)
        cell = by_up[key]
        cell["jobs"] += 1
        if job["preempted"]:
            cell["preemptions"] += 1
        start, end = job["start"], job["end"] or until
        cpus = job["cpus"]
        if start is None or cpus == 0:
            continue
        lo, hi = max(start, since), min(end, until)
        if hi <= lo:
            continue
        cell["core_seconds"] += cpus * (hi - lo).total_seconds()
        # Spread the job's core-seconds over the buckets it overlaps.
        index = max(0, int((lo - since) / step))
        while index < len(buckets) and buckets[index] < hi:
            b_lo, b_hi = max(lo, buckets[index]), min(hi, buckets[index] + step)
            if b_hi > b_lo:
                seconds = cpus * (b_hi - b_lo).total_seconds()
                share[index][1] += seconds
                if partition in burst_parts:
                    share[index][0] += seconds
            index += 1
    by_user_partition = [{"user": u, "partition": p, "jobs": c["jobs"],
                          "core_hours": round(c["core_seconds"] / 3600, 2), "preemptions": c["preemptions"]}
                         for (u, p), c in sorted(by_up.items())]
    totals = defaultdict(lambda: {"jobs": 0, "core_hours": 0.0, "preemptions": 0, "users": 0})
    for row in by_user_partition:
        t = totals[row["partition"]]
        t["jobs"] += row["jobs"]
        t["core_hours"] += row["core_hours"]
        t["preemptions"] += row["preemptions"]
        t["users"] += 1
    by_partition = [{"partition": p, "class": "burst" if p in burst_parts else "production",
                     "users": t["users"], "jobs": t["jobs"], "core_hours": round(t["core_hours"], 2),
                     "preemptions": t["preemptions"]} for p, t in sorted(totals.items())]
    burst_share = []
    for i, start in enumerate(buckets):
        burst, total = share[i]
        burst_share.append({"bucket": start.strftime("%Y-%m-%d"), "burst_core_hours": round(burst / 3600, 2),
                            "total_core_hours": round(total / 3600, 2),
                            "burst_share_percent": round(100.0 * burst / total, 1) if total else 0.0})
    return {"bucket": "day" if step.days == 1 else "week", "by_user_partition": by_user_partition,
            "by_partition": by_partition, "burst_share": burst_share}


# --- configuration drift ----------------------------------------------------------


def drift_section(drift, sources):
    """Changed tasks of a check-mode run, from ansible's `json` stdout callback output."""
    drift = sources.take("drift", drift)
    if drift is None:
        return []
    rows = []
    for play in drift.get("plays", []):
        play_name = play.get("play", {}).get("name", "")
        for task in play.get("tasks", []):
            task_name = task.get("task", {}).get("name", "")
            for host, result in sorted((task.get("hosts") or {}).items()):
                if not result.get("changed"):
                    continue
                rows.append({"host": host, "play": play_name, "task": task_name,
                             "action": result.get("action", ""), "diff": _diff_text(result)})
    stats = drift.get("stats") or {}
    sources.rows["drift"]["detail"] = "check-mode run: %d host(s), %d change(s)" % (len(stats), len(rows))
    return sorted(rows, key=lambda r: (r["host"], r["play"], r["task"], r["diff"]))


def _diff_text(result, limit=2000):
    diffs = result.get("diff") or []
    if isinstance(diffs, dict):
        diffs = [diffs]
    parts = []
    for diff in diffs:
        if "prepared" in diff:
            parts.append(str(diff["prepared"]))
            continue
        before, after = diff.get("before", ""), diff.get("after", "")
        header = diff.get("after_header") or diff.get("before_header") or ""
        if isinstance(before, str) and isinstance(after, str):
            lines = difflib.unified_diff(before.splitlines(), after.splitlines(), header, header, lineterm="", n=1)
            parts.append("\n".join(lines))
        else:
            parts.append("%s: %r -> %r" % (header, before, after))
    return "\n".join(parts)[:limit]


# --- packages and licences ---------------------------------------------------------


def packages_section(model, inventory_rows, host_facts, policy, sources):
    deny = tuple(policy.get("deny_licences") or licmod.DEFAULT_DENY)
    exempt = {p.lower() for p in policy.get("exempt_packages", licmod.DEFAULT_EXEMPT)}
    login_hosts = {r["host"] for r in inventory_rows if "login" in r["roles"]}
    rows = []
    for host in sorted(host_facts):
        if login_hosts and host not in login_hosts:
            continue  # licence policy covers the production environments on login nodes
        packages = host_facts[host].get("packages") if isinstance(host_facts[host], dict) else None
        if packages is None or is_unavailable(packages):
            sources.missing("packages:%s" % host, reason(packages))
            continue
        sources.ok("packages:%s" % host, host_facts[host].get("site_python", ""))
        for key in sorted(packages):
            meta = packages[key]
            licence = licmod.licence_of(meta)
            hit = denied(licence, deny) if key not in exempt else ""
            rows.append({"host": host, "package": meta.get("name", key), "version": meta.get("version", ""),
                         "licence": licence, "denied_by": hit,
                         "exempt": key in exempt})
    return rows


def denied(licence, deny):
    return licmod.denied(licence, deny)


# --- the whole report --------------------------------------------------------------


def _valid(model):
    return model is not None and model.valid


def default_period():
    """probe.default_period as datetimes: 30 days up to the next whole hour."""
    since, until = probe.default_period()
    return datetime.fromisoformat(since), datetime.fromisoformat(until)


def collect(inputs):
    """The report as a dict (without `generated_at`, which `render` stamps)."""
    unknown = set(inputs) - set(INPUT_KEYS)
    if unknown:
        raise ValueError("unknown audit inputs: %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(INPUT_KEYS)))
    sources = Sources()
    period = inputs.get("period") or {}
    scheduler = inputs.get("scheduler")
    if not period and not is_unavailable(scheduler):
        period = scheduler.get("period") or {}  # the period the scheduler probe asked sacct for
    since, until = default_period()
    since = datetime.fromisoformat(period["since"]) if period.get("since") else since
    until = datetime.fromisoformat(period["until"]) if period.get("until") else until
    if until <= since:
        raise ValueError("period: --until (%s) is not after --since (%s)" % (until, since))
    as_of = until.astimezone(timezone.utc)  # certificates are judged at the end of the period
    policy = inputs.get("policy") or {}
    scheduler = inputs.get("scheduler")
    model, model_errors = site_section(inputs.get("site"), sources)
    pbs_site = (model or {}).get("scheduler") == "pbs" or (
        isinstance(scheduler, dict) and "pbs_print_server" in scheduler)
    if is_unavailable(scheduler):
        keys = pbsaudit.SOURCES if pbs_site else SCHEDULER_SOURCES
        scheduler = {k: scheduler or {"unavailable": "not given"} for k in keys}

    version = sources.take("collection_version", inputs.get("collection_version"))
    hosts, host_facts = inventory_section(inputs.get("inventory"), inputs.get("hosts"), sources)
    if pbs_site:
        partitions, qos, access, assocs, mismatches, runs = pbs_sections(model, scheduler, inputs.get("directory"),
                                                                         sources)
        usage = usage_section(model, None, since, until, sources, runs=runs)
    else:
        partitions = partitions_section(model, scheduler.get("scontrol_partitions"), sources)
        qos = qos_section(model, scheduler.get("sacctmgr_qos"), sources)
        access, assocs, mismatches = access_section(model, scheduler.get("sacctmgr_assoc"),
                                                    inputs.get("directory"), sources,
                                                    tuple(policy.get("admin_users", ADMIN_USERS)))
        usage = usage_section(model, scheduler.get("sacct"), since, until, sources)
    certificates = certificates_section(inputs.get("ledger"), host_facts, as_of, sources)
    drift = drift_section(inputs.get("drift"), sources)
    packages = packages_section(model, hosts, host_facts, policy, sources)

    report = {
        "$schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "generated_at": "",
        "site": {
            "name": (model or {}).get("name", ""),
            "scheduler": (model or {}).get("scheduler", ""),
            "collection_version": version or "",
            "model_valid": model is not None and not model_errors,
            "model_errors": model_errors,
        },
        "period": {"since": since.isoformat(), "until": until.isoformat(),
                   "certificates_as_of": certmod.iso(as_of)},
        "inventory": hosts,
        "partitions": partitions,
        "qos": qos,
        "access": access,
        "associations": assocs,
        "access_mismatches": mismatches,
        "certificates": certificates,
        "usage": usage,
        "drift": drift,
        "packages": packages,
    }
    report["sources"] = sources.sorted()
    report["findings"] = findmod.findings(model, model_errors, report)
    report["summary"] = summary(report)
    return report


def pbs_sections(model, scheduler, directory, sources):
    """partitions, qos, access, associations (none on PBS), mismatches and runs of a PBS site (daskhpc.audit.pbs)."""
    server = sources.take("pbs_print_server", scheduler.get("pbs_print_server"), detail="qmgr -c 'print server'")
    sched = sources.take("pbs_print_sched", scheduler.get("pbs_print_sched"), detail="qmgr -c 'print sched'")
    accounting = sources.take("pbs_accounting", scheduler.get("pbs_accounting"),
                              detail="%s/server_priv/accounting" % scheduler.get("pbs_home", "$PBS_HOME"))
    directory = sources.take("directory", directory,
                             detail=(directory or {}).get("source", "") if isinstance(directory, dict) else "")
    queues = pbsbatch.qmgr_queues(server) if server is not None else {}
    partitions = pbsaudit.partition_rows(model, queues, pbsbatch.qmgr_sched(sched) if sched is not None else {})
    qos = pbsaudit.qos_rows(model, queues)
    access, mismatches = pbsaudit.access_rows(model, queues if server is not None else {}, directory)
    runs = pbsbatch.accounting_runs(accounting) if accounting is not None else []
    return partitions, qos, access, [], mismatches, runs


def summary(report):
    by_severity = {s: 0 for s in findmod.SEVERITIES}
    for finding in report["findings"]:
        by_severity[finding["severity"]] += 1
    status = defaultdict(int)
    for cert in report["certificates"]:
        status[cert["status"]] += 1
    return {
        "hosts": len(report["inventory"]),
        "partitions": len(report["partitions"]),
        "users_with_access": len({a["user"] for a in report["access"]}),
        "access_mismatches": len(report["access_mismatches"]),
        "certificates": len(report["certificates"]),
        "certificates_by_status": dict(sorted(status.items())),
        "core_hours": round(sum(p["core_hours"] for p in report["usage"]["by_partition"]), 2),
        "drift_changes": len(report["drift"]),
        "denied_packages": sum(1 for p in report["packages"] if p["denied_by"]),
        "findings_by_severity": by_severity,
        "sources_not_available": sum(1 for s in report["sources"] if s["status"] != "ok"),
    }
