# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Slurm user associations under one account, kept equal to LDAP group membership.

Pure Python. sacctmgr is reached through ``sacctmgr.Sacctmgr`` (parsable
output only); the directory through ``ldap``. The plan is computed first,
so check mode and diff mode show exactly what a real run would do.
"""

from __future__ import annotations

from . import account_names
from ._core.ldap import first, find_users, plan_association_sync
from .sacctmgr import SacctmgrError

ASSOC_FIELDS = ["Cluster", "Account", "User", "QOS", "DefaultQOS"]


class SyncError(RuntimeError):
    """An association change sacctmgr refused, with the fix."""


def _where(account, cluster):
    where = {"account": account}
    if cluster:
        where["cluster"] = cluster
    return where


def current_users(sacct, account, cluster=None):
    """``{user: row}`` of the user associations under *account* (the account's own row excluded)."""
    rows = sacct.show("association", ASSOC_FIELDS, _where(account, cluster))
    return {r["User"]: r for r in rows if r.get("User") and r.get("Account") == account}


def directory_members(conn, by_group, user_base=None, *, min_uid=account_names.MIN_UID, pattern=None,
                      schema="rfc2307"):
    """``(members, unknown, refused)`` from ``{group: [uid, ...]}`` as the directory gave them.

    *members*: sorted names that may hold an association. A name that is not a portable account
    name, is a system account's, or has a uid (uidNumber under *user_base*, or the local one) below
    *min_uid* is *refused* (``[{"name", "reason"}]``) before anything else sees it: it never reaches
    a search filter, sacctmgr or any command. With *user_base*, members without a user entry there
    are *unknown* and left out too.
    """
    names = sorted({u for uids in by_group.values() for u in uids})
    members, refused = account_names.split(names, min_uid=min_uid, pattern=pattern)
    unknown = []
    if user_base:
        known = find_users(conn, user_base, members, attributes=("uidNumber",), schema=schema)
        unknown = [u for u in members if u not in known]
        uids = {u: first(known[u], "uidNumber") for u in members if u in known}
        members, more = account_names.split([u for u in members if u in known], uids, min_uid=min_uid,
                                            pattern=pattern, lookup=False)
        refused += more
    return members, unknown, sorted(refused, key=lambda r: str(r["name"]))


def account_exists(sacct, account, cluster=None):
    rows = sacct.show("association", ASSOC_FIELDS, _where(account, cluster))
    return any(r.get("Account") == account and not r.get("User") for r in rows)


def qos_fix_needed(row, qos):
    """True when the association does not carry *qos* both in its list and as default."""
    if not qos:
        return False
    have = [q for q in (row.get("QOS") or "").split(",") if q]
    return qos not in have or row.get("DefaultQOS") != qos


def default_accounts(sacct):
    """``{user: default account}`` for every Slurm user."""
    return {r["User"]: r["DefaultAccount"] for r in sacct.show("user", ["User", "DefaultAccount"]) if r.get("User")}


def plan(members, current, qos=None, exclude=(), *, defaults=None, account=None):
    """``{"add", "remove", "fix_qos", "set_default"}`` - every change the sync will make.

    With *defaults* (``default_accounts()``) and *account*, members whose default
    account is another one get *account* as default (``set_default``); a user who
    does not exist yet gets it anyway when added.
    """
    add, remove = plan_association_sync(members, current, exclude)
    keep = set(members) - set(exclude)
    fix = sorted(u for u, row in current.items() if u in keep and qos_fix_needed(row, qos))
    set_default = []
    if defaults is not None and account:
        set_default = sorted(u for u in keep if u in defaults and defaults[u] != account)
    return {"add": add, "remove": remove, "fix_qos": fix, "set_default": set_default}


def _settings(account, cluster, qos):
    settings = {"account": account}
    if cluster:
        settings["cluster"] = cluster
    if qos:
        settings["qos"] = qos
        settings["defaultqos"] = qos
    return settings


def _move_default_account(sacct, user, account, cluster):
    """sacctmgr refuses to remove a user's default account while others remain: move it first."""
    users = sacct.show("user", ["User", "DefaultAccount"], {"name": user})
    if not users or users[0].get("DefaultAccount") != account:
        return
    where = {"user": user}
    if cluster:
        where["cluster"] = cluster
    others = sorted({r["Account"] for r in sacct.show("association", ASSOC_FIELDS, where)
                     if r.get("User") == user and r.get("Account") and r["Account"] != account})
    if others:
        sacct.modify("user", {"name": user}, {"defaultaccount": others[0]})


def apply(sacct, changes, account, cluster=None, qos=None):
    """Carry out a plan from ``plan()``."""
    for user in changes["add"]:
        try:
            sacct.add("user", user, _settings(account, cluster, qos))
        except SacctmgrError as exc:
            raise SyncError("cannot give %s an association under account %s: %s. Fix: check that the "
                            "account exists (playbooks/slurm.yml) and slurmdbd is up" % (user, account, exc)) from exc
    for user in changes["fix_qos"]:
        where = dict(_where(account, cluster), name=user)
        sacct.modify("user", where, {"qos": qos, "defaultqos": qos})
    for user in changes.get("set_default", []):
        sacct.modify("user", {"name": user}, {"defaultaccount": account})
    for user in changes["remove"]:
        try:
            _move_default_account(sacct, user, account, cluster)
            sacct.delete("user", dict(_where(account, cluster), name=user))
        except SacctmgrError as exc:
            raise SyncError("cannot remove %s's association under account %s: %s. Fix: if the user still "
                            "has jobs under this account, let them finish or cancel them "
                            "(scancel -u %s -A %s), then re-run" % (user, account, exc, user, account)) from exc
