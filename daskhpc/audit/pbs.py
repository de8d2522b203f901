# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit on a PBS site: queues, ACLs and limits from qmgr, what ran from the server's accounting log.

The report keeps the SLURM report's shape (schema/report-v1.json), so its findings, renderers and
consumers work unchanged. What each section holds on PBS:

* ``partitions``: one row per queue (``qmgr -c 'print server'``). ``allow_groups_scheduler`` is the
  queue's ``acl_groups`` when ``acl_group_enable`` is true, else empty (everyone: "ALL");
  ``priority_tier_scheduler`` the queue's ``Priority``; ``preempt_mode_scheduler`` on a production
  queue ``OFF`` when it is an express queue (``Priority`` at or above the scheduler's
  ``preempt_queue_prio``, so nothing preempts its jobs), else says how it can be preempted, on a
  burst queue the scheduler's ``preempt_order``; ``grace_time_scheduler`` the queue's ``kill_delay``;
  ``qos_scheduler`` the queue itself for a burst queue, whose limits stand where SLURM's QOS does.
* ``qos``: one row per burst queue, its entity limits in SLURM's terms (``max_run_res.ncpus``
  ``[u:PBS_GENERIC=N]`` is MaxTRESPerUser ``cpu=N``, ``[o:PBS_ALL=N]`` GrpTRES ``cpu=N``,
  ``max_run``/``max_queued`` ``[u:PBS_GENERIC=N]`` MaxJobsPerUser/MaxSubmitPerUser,
  ``resources_max.walltime`` MaxWall), beside the model's.
* ``access``: who PBS admits to each queue: the members of its live ``acl_groups`` (the model's
  ``allow_groups`` when the server was not read). PBS has no associations: ``association`` is true
  when the queue's ACL admits the user.
* ``usage``: the runs in the server's accounting log (``$PBS_HOME/server_priv/accounting``): each
  ``E`` (ended) and ``R`` (rerun: requeued, by preemption or ``qrerun``) record is one run with its
  user, queue, start, end and ``Resource_List.ncpus``; an ``S`` record without a later end is a run
  still going. ``R`` records count as preemptions.
"""

from __future__ import annotations

from daskhpc.core import pbs as pbsmodel
from daskhpc.core import site_model
from daskhpc.scheduler import parse_int
from daskhpc.scheduler.pbs import entity_limits

SOURCES = ("pbs_print_server", "pbs_print_sched", "pbs_accounting")


def _first(values, default=None):
    return values[0] if values else default


def acl_groups(queue):
    """The groups a queue admits, or [] when its group ACL is off (everyone)."""
    if str(_first(queue.get("acl_group_enable"), "False")).lower() not in ("true", "t", "1", "y", "yes"):
        return []
    return sorted(set(queue.get("acl_groups") or []))


def partition_rows(model, queues, sched):
    """The report's ``partitions`` rows from the live queues and the model."""
    classes = {p["name"]: p.get("class", "") for p in (model or {}).get("partitions", [])}
    written = {p["name"]: p for p in (model or {}).get("partitions", [])}
    express = parse_int(_first(sched.get("preempt_queue_prio"))) or pbsmodel.PREEMPT_QUEUE_PRIO
    preempt_order = _first(sched.get("preempt_order"), "SCR")  # OpenPBS's default
    modelled = {}
    if model is not None and getattr(model, "valid", False):
        modelled = {q["name"]: q["attributes"] for q in pbsmodel.pbs_queues(model)}
    rows = []
    for name in sorted(set(queues) | set(classes)):
        have, want, part = queues.get(name, {}), modelled.get(name, {}), written.get(name, {})
        cls = classes.get(name, "unknown (not in the site model)")
        priority = parse_int(_first(have.get("Priority"), 0)) if name in queues else None
        if name not in queues:
            mode = ""
        elif cls == "burst":
            mode = preempt_order
        elif priority is not None and priority >= express:
            mode = "OFF"
        else:
            mode = "normal_jobs (Priority %s below preempt_queue_prio %d: express queues preempt it)" % (
                priority, express)
        enabled = str(_first(have.get("enabled"), "False")) == "True"
        started = str(_first(have.get("started"), "False")) == "True"
        rows.append({
            "name": name,
            "class": cls,
            "in_model": name in classes,
            "in_scheduler": name in queues,
            "nodes": ",".join(part.get("nodes", [])) if part else "",
            "total_cpus": None,
            "allow_groups_model": sorted(part.get("allow_groups") or []),
            "allow_groups_scheduler": acl_groups(have) if have else [],
            "priority_tier_model": part.get("priority_tier"),
            "priority_tier_scheduler": priority,
            "preempt_mode_model": "" if not want else (preempt_order if cls == "burst" else "OFF"),
            "preempt_mode_scheduler": mode,
            "grace_time_scheduler": parse_int(_first(have.get("kill_delay"))),
            "max_time_model": str(want.get("resources_max.walltime", part.get("max_time", "") or "")),
            "max_time_scheduler": str(_first(have.get("resources_max.walltime"), "UNLIMITED" if have else "")),
            "qos_model": name if cls == "burst" and want else "",
            "qos_scheduler": name if cls == "burst" and have else "",
            "state_scheduler": ("UP" if enabled and started else "enabled=%s started=%s" % (enabled, started))
            if have else "",
        })
    return rows


def qos_rows(model, queues):
    """One row per burst queue: its limits in the terms of SLURM's burst QOS, beside the model's."""
    burst = {p["name"] for p in (model or {}).get("partitions", []) if p.get("class") == "burst"}
    want = site_model.burst_qos(model) if model is not None and getattr(model, "valid", False) else {}
    rows = []
    for name in sorted(burst | {n for n in queues if n in burst}):
        have = queues.get(name, {})
        ncpus = entity_limits(have.get("max_run_res.ncpus"))
        run = entity_limits(have.get("max_run"))
        queued = entity_limits(have.get("max_queued"))
        per_user_cpu = ncpus.get(("u", "PBS_GENERIC"))
        all_cpu = ncpus.get(("o", "PBS_ALL"))
        rows.append({
            "name": name,
            "in_model": bool(want),
            "in_scheduler": name in queues,
            "priority": parse_int(_first(have.get("Priority"))),
            "preempt": str(_first(have.get("resources_default.preempt_targets"), "")),
            "preempt_mode": "",
            "grace_time": str(_first(have.get("kill_delay"), "")),
            "max_tres_per_user": "cpu=%s" % per_user_cpu if per_user_cpu else "",
            "max_jobs_per_user": run.get(("u", "PBS_GENERIC"), ""),
            "max_submit_per_user": queued.get(("u", "PBS_GENERIC"), ""),
            "grp_tres": "cpu=%s" % all_cpu if all_cpu else "",
            "max_wall": str(_first(have.get("resources_max.walltime"), "")),
            "flags": "",
            "model_max_tres_per_user": want.get("MaxTRESPerUser", ""),
            "model_max_jobs_per_user": str(want.get("MaxJobsPerUser", "")),
            "model_grp_tres": want.get("GrpTRES", ""),
            "model_max_wall": want.get("MaxWall", ""),
        })
    return rows


def access_rows(model, queues, directory):
    """Who the queues admit (live acl_groups; the model's allow_groups for a queue not read) and mismatches."""
    members_of = (directory or {}).get("groups") or {}
    chains = (directory or {}).get("via") or {}
    known_users = (directory or {}).get("users") or {}
    access, mismatches = [], []
    for part in sorted((model or {}).get("partitions", []), key=lambda p: p["name"]):
        name = part["name"]
        live = queues.get(name)
        allowed = acl_groups(live) if live is not None else sorted(part.get("allow_groups") or [])
        via = {}
        for group in allowed:
            for user in members_of.get(group) or []:
                via.setdefault(user, []).append(" via ".join(chains.get(group, {}).get(user) or [group]))
        for user in sorted(via):
            in_dir = known_users.get(user)
            access.append({"partition": name, "class": part.get("class", ""), "user": user,
                           "groups": sorted(via[user]), "association": live is not None,
                           "in_directory": "unknown" if in_dir is None else ("yes" if in_dir else "no")})
        for group in allowed:
            if directory is not None and group in members_of and members_of[group] is None:
                mismatches.append({"partition": name, "user": "", "group": group,
                                   "kind": "allowed group not in the directory",
                                   "detail": "group %s is allowed on %s but the directory has no such group"
                                   % (group, name)})
    return access, sorted(mismatches, key=lambda m: (m["partition"], m["kind"], m["user"], m["group"]))
