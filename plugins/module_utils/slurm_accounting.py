# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Declarative QOS, account and cluster records in SLURM accounting (logic behind the modules)."""

from __future__ import annotations

from .sacctmgr import (
    Sacctmgr,
    SacctmgrError,
    diff_settings,
    norm_duration,
    norm_folded,
    norm_int,
    norm_list,
    norm_text,
    norm_tres,
    state_view,
    timed_runner,
)

# option name -> (sacctmgr set key, sacctmgr format field, normaliser)
QOS_FIELDS = {
    "description": ("Description", "description", norm_text),
    "priority": ("Priority", "priority", norm_int),
    "max_tres_per_user": ("MaxTRESPerUser", "maxtrespu", norm_tres),
    "max_jobs_per_user": ("MaxJobsPerUser", "maxjobspu", norm_int),
    "max_submit_jobs_per_user": ("MaxSubmitJobsPerUser", "maxsubmitpu", norm_int),
    "grp_tres": ("GrpTRES", "grptres", norm_tres),
    "max_wall": ("MaxWall", "maxwall", norm_duration),
    "flags": ("Flags", "flags", norm_list),
}

ACCOUNT_FIELDS = {
    "description": ("Description", "descr", norm_folded),
    "organization": ("Organization", "org", norm_folded),
}

# Association-level settings of the account itself (the row with no user).
ACCOUNT_ASSOC_FIELDS = {
    "parent": ("Parent", "parentname", norm_text),
    "qos": ("QOS", "qos", norm_list),
    "default_qos": ("DefaultQOS", "defaultqos", norm_text),
}

# A user record's own settings (not its associations' limits).
USER_FIELDS = {
    "default_account": ("DefaultAccount", "defaultaccount", norm_text),
    "admin_level": ("AdminLevel", "admin", norm_folded),
}


def run_or_fail(module, what, action):
    """Run one record's change; a sacctmgr failure ends the module naming the record and the likely cause."""
    try:
        return action()
    except SacctmgrError as exc:
        module.fail_json(msg="Could not manage %s %s: %s. Is slurmdbd running and reachable?"
                         % (what, module.params["name"], exc))


def sacctmgr_runner(module):
    """How the modules run sacctmgr: killed after their command_timeout (a hung slurmdbd must not hang them)."""
    return timed_runner(module.params["command_timeout"])


class Recorder:
    """Runs sacctmgr for the module, or only records the commands in check mode."""

    def __init__(self, module):
        self.module = module
        self.run = sacctmgr_runner(module)
        self.commands = []

    def __call__(self, argv):
        changing = "--immediate" in argv
        if changing:
            self.commands.append(argv)
            if self.module.check_mode:
                return 0, "", ""
        return self.run(argv)


def _manager(module):
    recorder = Recorder(module)
    return Sacctmgr(run=recorder, binary=module.params["sacctmgr_path"]), recorder


def ensure(module, entity, fields, key_field="name", add_settings=None):
    """Make one named record match the module's options; return changed/diff/commands/state.

    ``add_settings`` go only into the command that creates the record (e.g. a new user's Account)."""
    params = module.params
    name = params["name"]
    mgr, recorder = _manager(module)
    format_fields = [key_field] + [f[1] for f in fields.values()]
    rows = [r for r in mgr.show(entity, format_fields, where={"name": name}) if r[key_field] == name]
    current = rows[0] if rows else None
    wanted = {option: params.get(option) for option in fields}
    before = dict(state_view(fields, current), name=name)
    if params["state"] == "absent":
        if current:
            mgr.delete(entity, {"name": name})
        return _result(recorder, before if current else {}, {}, {})
    if current is None:
        settings = diff_settings(fields, None, wanted)
        mgr.add(entity, name, dict(settings, **(add_settings or {})))
    else:
        settings = diff_settings(fields, current, wanted)
        if settings:
            mgr.modify(entity, {"name": name}, settings)
    after = _after(before, fields, settings)
    return _result(recorder, before if current else {}, after, after)


def ensure_account(module):
    """An account, plus the association-level settings (parent, QOS list, default QOS) on its cluster."""
    params = module.params
    name = params["name"]
    mgr, recorder = _manager(module)
    rows = [r for r in mgr.show("account", ["account", "descr", "org"], where={"name": name}) if r["account"] == name]
    current = rows[0] if rows else None
    where = {"account": name}
    if params.get("cluster"):
        where["cluster"] = params["cluster"]
    assoc_fields = ["account", "user", "parentname", "qos", "defaultqos"]
    assoc = next((r for r in mgr.show("association", assoc_fields, where=where) if not r["user"]), None)
    before = dict(state_view(ACCOUNT_FIELDS, current), **state_view(ACCOUNT_ASSOC_FIELDS, assoc)) if current else {}
    wanted = {option: params.get(option) for option in list(ACCOUNT_FIELDS) + list(ACCOUNT_ASSOC_FIELDS)}
    if params["state"] == "absent":
        if current:
            mgr.delete("account", {"name": name})
        return _result(recorder, before, {}, {})
    if current is None:
        settings = diff_settings(ACCOUNT_FIELDS, None, wanted)
        settings.update(diff_settings(ACCOUNT_ASSOC_FIELDS, None, wanted))
        if params.get("cluster"):
            settings["Cluster"] = params["cluster"]
        mgr.add("account", name, settings)
    else:
        settings = diff_settings(ACCOUNT_FIELDS, current, wanted)
        settings.update(diff_settings(ACCOUNT_ASSOC_FIELDS, assoc, wanted))
        if settings:
            mgr.modify("account", {"name": name} if not params.get("cluster") else
                       {"name": name, "cluster": params["cluster"]}, settings)
    after = _after(before, dict(ACCOUNT_FIELDS, **ACCOUNT_ASSOC_FIELDS), settings)
    return _result(recorder, before, after, after)


def ensure_user(module):
    """A user record with its default account (its association there is created with it) and admin level."""
    return ensure(module, "user", USER_FIELDS, key_field="user",
                  add_settings={"Account": module.params["default_account"]})


def _after(before, fields, settings):
    """The record as it will read after the change: only the fields being set differ from before."""
    after = dict(before)
    for option, (set_key, _format_key, _normalise) in fields.items():
        if set_key in settings:
            after[option] = settings[set_key]
    return after


def _result(recorder, before, after, state):
    changed = bool(recorder.commands)
    return {
        "changed": changed,
        "commands": recorder.commands,
        "diff": {"before": before, "after": after},
        "state": state,
    }
