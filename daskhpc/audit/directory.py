# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The access review's directory side read straight from LDAP (ldap3, through the collection's ldap helper).

The default source is the name service (`getent`, daskhpc/audit/probe.py), which is what
slurmctld itself resolves AllowGroups through; this one asks the directory, so it also
works on a controller that is not an LDAP client. Same output shape either way.
"""

from __future__ import annotations

from daskhpc.core import ldap as ldaphelper


def directory_from_ldap(model, groups, users, bind_pw=None, ca_file=None):
    """{"source", "groups": {group: [uid] | None when absent}, "users": {uid: exists}}."""
    cfg = model["ldap"]
    if not cfg.get("uri"):
        return {"unavailable": "the site model has no ldap.uri"}
    try:
        conn = ldaphelper.connect(cfg["uri"], cfg.get("bind_dn") if bind_pw else None, bind_pw,
                                  start_tls=cfg.get("start_tls", True), ca_file=ca_file)
    except ldaphelper.LdapError as exc:
        return {"unavailable": "LDAP %s: %s" % (cfg["uri"], exc)}
    try:
        out = {"source": "ldap %s" % cfg["uri"], "groups": {}, "via": {}, "users": {}}
        schema = ldaphelper.schema_settings(cfg.get("schema"), cfg.get("group_schema"))["schema"]
        # Effective membership, nested groups included: the same reading as the sync module's.
        for group in sorted(set(groups)):
            try:
                found = ldaphelper.effective_members(conn, cfg["group_base"], [group], schema)[group]
                out["groups"][group] = sorted(found)
                out["via"][group] = found
            except ldaphelper.GroupNotFound:
                out["groups"][group] = None
        wanted = set(users) | {u for m in out["groups"].values() for u in (m or [])}
        found = ldaphelper.find_users(conn, cfg["user_base"], sorted(wanted), schema=schema)
        out["users"] = {u: u in found for u in sorted(wanted)}
        return out
    except ldaphelper.LdapError as exc:
        return {"unavailable": "LDAP %s: %s" % (cfg["uri"], exc)}
    finally:
        ldaphelper._close(conn)
