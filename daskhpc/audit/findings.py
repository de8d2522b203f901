# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Policy findings: what is off-policy, how bad it is, and how to fix it.

Each rule reads the collected sections (never the raw sources), so it judges the
live scheduler where it was reachable and the site model otherwise.
"""

from __future__ import annotations

from collections import defaultdict

from daskhpc.core.site_model import expand_hostlist

SEVERITIES = ("critical", "high", "medium", "low", "info")
MAX_LISTED = 20


def _finding(rule, severity, subject, title, detail, fix, section):  # noqa: PLR0917 (the schema's fields, in order)
    return {"id": "%s:%s" % (rule, subject), "rule": rule, "severity": severity, "subject": subject,
            "title": title, "detail": detail, "fix": fix, "section": section}


def _names(items):
    items = sorted(items)
    more = len(items) - MAX_LISTED
    return ", ".join(items[:MAX_LISTED]) + (" and %d more" % more if more > 0 else "")


def _nodes(expr):
    try:
        return set(expand_hostlist(expr)) if expr else set()
    except ValueError:
        return set()


def model_rules(model, errors):
    out = []
    for error in errors:
        field, _sep, rest = error.partition(": ")
        problem, _sep, fix = rest.partition(". Fix: ")
        out.append(_finding("model-invalid", "high", field, "The site model is invalid",
                            "%s: %s" % (field, problem), fix or "correct the field", "site"))
    if not model:
        return out
    dask, ldap = model.get("dask", {}), model.get("ldap", {})
    if dask.get("tls") != "required":
        out.append(_finding("plaintext-dask", "high", "dask.tls", "Plaintext Dask connections are allowed",
                            "dask.tls is %r: clusters may accept clients and workers without TLS, so anyone who "
                            "can reach a scheduler port can submit work as its owner" % dask.get("tls"),
                            "set dask.tls: required in the site model and re-run the site playbook", "site"))
    uri = str(ldap.get("uri") or "")
    if uri.startswith("ldap://") and not ldap.get("start_tls"):
        out.append(_finding("ldap-without-tls", "high", "ldap.uri", "LDAP is used without TLS",
                            "%s without StartTLS sends binds and directory data in clear text" % uri,
                            "use an ldaps:// URI or set ldap.start_tls: true", "site"))
    return out


def partition_rules(report):
    out = []
    parts = report["partitions"]
    qos = {q["name"]: q for q in report["qos"]}
    for p in parts:
        p["_nodes"] = _nodes(p["nodes"])
    for p in (p for p in parts if p["class"] == "production"):
        mode = p["preempt_mode_scheduler"]
        if p["in_scheduler"] and mode and mode.upper() != "OFF":
            out.append(_finding("preemptable-production", "critical", p["name"],
                                "A production partition can be preempted",
                                "the scheduler runs partition %s with PreemptMode=%s: its jobs can be requeued, "
                                "suspended or cancelled by other work" % (p["name"], mode),
                                "set PreemptMode=OFF on production partitions (the site model renders it; "
                                "re-run playbooks/slurm.yml)", "partitions"))
        for q in parts:
            if q is p or q["class"] == "production" or not (p["_nodes"] & q["_nodes"]):
                continue
            # Judge the running scheduler and the model as written: either may be the one that is wrong.
            sides = (("priority_tier_scheduler", "scheduler"), ("priority_tier_model", "site model"))
            inverted = ["%s vs %s in the %s" % (q[key], p[key], where) for key, where in sides
                        if isinstance(p[key], int) and isinstance(q[key], int) and q[key] >= p[key]]
            if inverted:
                out.append(_finding("preemptable-production", "critical", "%s<-%s" % (p["name"], q["name"]),
                                    "A production partition can be preempted",
                                    "%s partition %s's PriorityTier is not below production partition %s's on "
                                    "shared nodes (%s): its jobs are scheduled ahead of production and, under "
                                    "preempt/partition_prio, may preempt it"
                                    % (q["class"], q["name"], p["name"], "; ".join(inverted)),
                                    "give %s a lower priority_tier than %s (defaults: burst 1, production 10)"
                                    % (q["name"], p["name"]), "partitions"))
    for p in (p for p in parts if p["class"] == "burst" and p["in_scheduler"]):
        limits = qos.get(p["qos_scheduler"] or "", {})
        missing = []
        if not p["qos_scheduler"]:
            missing.append("no partition QOS")
        elif not limits.get("in_scheduler"):
            missing.append("partition QOS %s does not exist" % p["qos_scheduler"])
        else:
            if not limits["max_tres_per_user"] and not limits["max_jobs_per_user"]:
                missing.append("no per-user limit (MaxTRESPerUser/MaxJobsPerUser)")
            if not limits["grp_tres"]:
                missing.append("no cap for the whole partition (GrpTRES)")
        if p["max_time_scheduler"].upper() in ("UNLIMITED", "INFINITE"):
            missing.append("MaxTime=UNLIMITED")
        if missing:
            out.append(_finding("burst-without-limits", "high", p["name"], "A burst partition has no limits",
                                "burst partition %s: %s; a flood of burst jobs can take the whole cluster or "
                                "overload slurmctld" % (p["name"], "; ".join(missing)),
                                "attach the burst QOS (burst.* in the site model) and re-run playbooks/slurm.yml",
                                "partitions"))
    for p in parts:
        if p["in_model"] and p["in_scheduler"] and p["allow_groups_model"] != p["allow_groups_scheduler"]:
            opened = not p["allow_groups_scheduler"] and p["allow_groups_model"]
            out.append(_finding("allow-groups-drift", "high" if opened else "medium", p["name"],
                                "Partition access differs from the site model",
                                "AllowGroups in the scheduler: %s; in the site model: %s"
                                % (",".join(p["allow_groups_scheduler"]) or "ALL",
                                   ",".join(p["allow_groups_model"]) or "ALL"),
                                "re-run playbooks/slurm.yml (then scontrol reconfigure)", "partitions"))
        elif not p["in_model"]:
            out.append(_finding("partition-not-in-model", "medium", p["name"],
                                "A partition exists that the site model does not describe",
                                "partition %s is configured in the scheduler but not in daskhpc_site" % p["name"],
                                "add it to the site model with its class, or remove it from slurm.conf",
                                "partitions"))
        elif not p["in_scheduler"] and any(s["source"] == "scontrol_partitions" and s["status"] == "ok"
                                           for s in report["sources"]):
            out.append(_finding("partition-missing", "medium", p["name"],
                                "A partition of the site model is not configured",
                                "partition %s is in daskhpc_site but the scheduler does not know it" % p["name"],
                                "re-run playbooks/slurm.yml", "partitions"))
        p.pop("_nodes", None)
    for q in report["qos"]:
        if not (q["in_model"] and q["in_scheduler"]):
            continue
        pairs = [("MaxTRESPerUser", q["max_tres_per_user"], q["model_max_tres_per_user"]),
                 ("MaxJobsPerUser", q["max_jobs_per_user"], q["model_max_jobs_per_user"]),
                 ("GrpTRES", q["grp_tres"], q["model_grp_tres"]),
                 ("MaxWall", q["max_wall"], q["model_max_wall"])]
        differ = ["%s %s (model %s)" % (k, have or "unset", want) for k, have, want in pairs
                  if _norm(have) != _norm(want)]
        if differ:
            out.append(_finding("qos-drift", "medium", q["name"], "A QOS differs from the site model",
                                "; ".join(differ), "re-run playbooks/slurm.yml (onprem.daskhpc.slurm_qos)", "qos"))
    return out


def _norm(value):
    text = str(value or "").strip()
    return ",".join(sorted(text.split(","))) if "=" in text else text.lstrip("0") or "0"


ACCESS_SEVERITY = {
    "association of a user not in the directory": ("high", "remove the association (sacctmgr delete user) or "
                                                   "restore the account in the directory"),
    "association without group membership": ("medium", "run the access sync (playbooks/access.yml) so "
                                             "associations follow group membership"),
    "allowed group not in the directory": ("medium", "create the group in the directory or remove it from "
                                           "allow_groups"),
    "member without association": ("low", "run the access sync (playbooks/access.yml); until then the member "
                                   "cannot run there"),
}


def access_rules(report):
    grouped = defaultdict(list)
    for m in report["access_mismatches"]:
        grouped[(m["partition"], m["kind"])].append(m["user"] or m["group"])
    out = []
    for (partition, kind), who in sorted(grouped.items()):
        severity, fix = ACCESS_SEVERITY[kind]
        out.append(_finding("access-" + kind.replace(" ", "-"), severity, partition, "Access review: " + kind,
                            "%d on %s: %s" % (len(who), partition, _names(who)), fix, "access"))
    return out


def certificate_rules(report):
    out = []
    certs = report["certificates"]
    ledger_ok = any(s["source"] == "ca_ledger" and s["status"] == "ok" for s in report["sources"])
    latest = {}
    for c in (c for c in certs if c["source"] == "ledger" and c["status"] != "revoked"):
        key = (c["subject"], c["profile"])
        if key not in latest or c["not_after"] > latest[key]["not_after"]:
            latest[key] = c
    deployed = {c["serial"] for c in certs if c["source"] == "file"}
    judged = [c for c in certs if c["source"] == "file"] + [c for c in latest.values() if c["serial"] not in deployed]
    for c in sorted(judged, key=lambda c: c["id"]):
        where = c["path"] and "%s:%s" % (c["host"], c["path"]) or "ledger serial %s" % c["serial"]
        if c["status"] == "expired":
            out.append(_finding("expired-certificate", "high", c["id"], "An expired certificate is in use",
                                "%s (%s) expired on %s" % (c["subject"], where, c["not_after"]),
                                "renew it (re-run playbooks/pki.yml or playbooks/user_credentials.yml) or "
                                "remove the file", "certificates"))
        elif c["status"] == "expiring" and _lifetime_days(c) > 30:
            # Short-lived certificates (user credentials) renew automatically; only long ones are findings.
            out.append(_finding("expiring-certificate", "medium", c["id"], "A certificate expires within 30 days",
                                "%s (%s) expires on %s (%s days)" % (c["subject"], where, c["not_after"],
                                                                     c["days_left"]),
                                "renew it before it expires (re-run playbooks/pki.yml)", "certificates"))
        if c["source"] == "file" and c["status"] == "revoked":
            out.append(_finding("revoked-certificate-deployed", "high", c["id"],
                                "A revoked certificate is still deployed",
                                "%s at %s was revoked on %s (%s)" % (c["subject"], where, c["revoked_at"],
                                                                     c["revocation_reason"] or "no reason"),
                                "replace the file with a newly issued certificate", "certificates"))
        if c["source"] == "file" and ledger_ok and not c["in_ledger"] and not c["is_ca"]:
            out.append(_finding("certificate-not-in-ledger", "low", c["id"],
                                "A deployed certificate is not in the issuance ledger",
                                "%s at %s (serial %s) was not issued through the site CA's ledger"
                                % (c["subject"], where, c["serial"]),
                                "re-issue it through the site CA (playbooks/pki.yml)", "certificates"))
    for c in certs:
        if c["weak"] and c["status"] not in ("expired", "revoked"):
            out.append(_finding("weak-key", "high", c["id"], "A certificate uses a weak key or signature",
                                "%s: %s" % (c["subject"], c["weak"]),
                                "re-issue with ECDSA P-256 (or RSA >= 2048 with SHA-256)", "certificates"))
    return out


def _lifetime_days(cert):
    from daskhpc.audit.certs import parse_time
    start, end = parse_time(cert["not_before"]), parse_time(cert["not_after"])
    return (end - start).days if start and end else 0


def other_rules(report):
    out = []
    for p in report["packages"]:
        if p["denied_by"]:
            out.append(_finding("denied-licence", "medium", "%s:%s" % (p["host"], p["package"]),
                                "A package with a denied licence is in a production environment",
                                "%s %s on %s is licensed %s (deny list: %s)"
                                % (p["package"], p["version"], p["host"], p["licence"], p["denied_by"]),
                                "remove the package, replace it, or exempt it after legal review "
                                "(--exempt-package)", "packages"))
    per_host = defaultdict(int)
    for change in report["drift"]:
        per_host[change["host"]] += 1
    for host, count in sorted(per_host.items()):
        out.append(_finding("configuration-drift", "medium", host, "A host differs from the site playbook",
                            "a check-mode run of the site playbook would change %d task(s) on %s" % (count, host),
                            "review the changes in the drift section, then run playbooks/site.yml", "drift"))
    for s in report["sources"]:
        if s["status"] != "ok":
            out.append(_finding("source-not-available", "info", s["source"], "A source could not be read",
                                s["detail"], "make the source reachable and re-run the audit; until then "
                                "the sections that depend on it are incomplete", "sources"))
    return out


# The rules speak SLURM; on a PBS site (daskhpc.audit.pbs fills the same rows) their words become PBS's.
PBS_WORDS = (
    ("set PreemptMode=OFF on production partitions (the site model renders it; re-run playbooks/slurm.yml)",
     "make production queues express queues (Priority at or above the scheduler's preempt_queue_prio; the "
     "site model renders it; re-run playbooks/pbs.yml)"),
    ("with PreemptMode=", "at preemption level "),
    ("PriorityTier", "Priority"),
    ("under preempt/partition_prio, may preempt it", "may preempt it"),
    ("no per-user limit (MaxTRESPerUser/MaxJobsPerUser)", "no per-user limit (max_run_res.ncpus or max_run "
     "[u:PBS_GENERIC=N])"),
    ("no cap for the whole partition (GrpTRES)", "no cap for the whole queue (max_run_res.ncpus [o:PBS_ALL=N])"),
    ("MaxTime=UNLIMITED", "no resources_max.walltime"),
    ("overload slurmctld", "overload pbs_server"),
    ("attach the burst QOS (burst.* in the site model)", "set the burst queue's limits (burst.* in the site model)"),
    ("AllowGroups in the scheduler", "acl_groups in the scheduler"),
    (" (then scontrol reconfigure)", ""),
    (" (onprem.daskhpc.slurm_qos)", " (onprem.daskhpc.pbs_queue)"),
    ("remove it from slurm.conf", "delete the queue (qmgr -c 'delete queue NAME')"),
    ("playbooks/slurm.yml", "playbooks/pbs.yml"),
    ("A QOS differs", "A burst queue's limits differ"),
)


def in_pbs_words(finding):
    for field in ("title", "detail", "fix"):
        for slurm, pbs in PBS_WORDS:
            finding[field] = finding[field].replace(slurm, pbs)
    return finding


def findings(model, model_errors, report):
    found = model_rules(model, model_errors) + partition_rules(report) + access_rules(report) \
        + certificate_rules(report) + other_rules(report)
    if (report.get("site") or {}).get("scheduler") == "pbs":
        found = [in_pbs_words(f) for f in found]
    unique = {f["id"]: f for f in found}
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(unique.values(), key=lambda f: (rank[f["severity"]], f["rule"], f["subject"]))
