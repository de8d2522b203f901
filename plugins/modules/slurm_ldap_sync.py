#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: slurm_ldap_sync
short_description: Keep Slurm user associations under an account equal to LDAP group membership
version_added: 0.1.0
description:
  - Reads the members of O(groups) from the directory and the user associations under
    O(account) from Slurm accounting (C(sacctmgr --parsable2 --noheader)).
  - Members without an association gain one (with O(qos) as QOS list and default QOS when given);
    users holding an association who are no longer members lose it. Users in O(exclude_users) are
    never touched.
  - Reports who was added and removed; in check mode reports what would change.
  - Member names are data, not commands. A name that is not a portable POSIX account name
    (C([a-z_][a-z0-9_-]{0,31}) - no commas, whitespace, C(=), upper case, and no leading C(-)), that does not
    match O(name_pattern), that names a system account (C(root), C(daemon), C(slurm), ...), or whose uid
    (C(uidNumber) under O(user_base), or the local one) is below O(min_uid) is skipped and reported in
    RV(refused) with a warning; it never reaches sacctmgr or any other command.
  - Run C(scontrol reconfigure) afterwards when it changed something - slurmctld caches the
    members of C(AllowGroups) (playbooks/access.yml does).
extends_documentation_fragment:
  - onprem.daskhpc.ldap
  - onprem.daskhpc.command
attributes:
  check_mode:
    support: full
    description: Reports the associations it would add or remove; runs no sacctmgr command that changes anything.
  diff_mode:
    support: full
    description: Shows the users holding an association under O(account) before and after.
options:
  groups:
    description: LDAP groups whose members should hold an association (usually a partition's C(allow_groups)).
    type: list
    elements: str
    required: true
  group_base:
    description: DN under which groups live.
    type: str
    required: true
  schema:
    description:
      - The directory's schema (site model C(ldap.schema)). V(rfc2307) - posixGroup with memberUid, no nesting;
        V(rfc2307bis) - groupOfNames with member DNs, nested groups followed; V(ad) - Active Directory groups,
        nested groups followed, users' login name is C(sAMAccountName).
      - Without it, O(group_schema) decides (posixGroup - rfc2307, groupOfNames - rfc2307bis).
    type: str
    choices: [ad, rfc2307, rfc2307bis]
  group_schema:
    description: Group object class (older form of O(schema)); must fit O(schema) when both are given.
    type: str
    choices: [posixGroup, groupOfNames, group]
  user_base:
    description:
      - DN under which users live. When given, only members whose user entry exists gain an
        association; the others are reported in RV(unknown_members).
    type: str
  account:
    description: Slurm account the associations live under (e.g. the burst account). Must exist.
    type: str
    required: true
  cluster:
    description: Slurm cluster name. All clusters when omitted.
    type: str
  qos:
    description: QOS given to new associations (list and default); existing ones are corrected. Inherited when omitted.
    type: str
  default_account:
    description:
      - Make O(account) the default account of every member (e.g. the production account, so that
        jobs without C(--account) never land on the burst account).
    type: bool
    default: false
  exclude_users:
    description: Users whose association under O(account) is managed by hand.
    type: list
    elements: str
    default: []
  missing_groups:
    description: V(error) fails on a group that does not exist in the directory; V(ignore) treats it as empty.
    type: str
    choices: [error, ignore]
    default: error
  sacctmgr:
    description: Path of sacctmgr.
    type: path
    default: sacctmgr
  min_uid:
    description:
      - Members whose uid is below this are system accounts and are refused. It can be raised, not lowered
        below 1000.
    type: int
    default: 1000
  name_pattern:
    description:
      - A regular expression every member name must also match (on top of the portable-name rule, so it can
        only make the check stricter), e.g. C([a-z]{2,8}[0-9]{0,4}) for a site's naming scheme.
    type: str
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Members of the burst partitions' groups may burst, leavers may not
  onprem.daskhpc.slurm_ldap_sync:
    server_uri: "{{ daskhpc_site.ldap.uri }}"
    bind_dn: "{{ daskhpc_site.ldap.bind_dn }}"
    bind_pw: "{{ daskhpc_ldap_reader_password }}"
    group_base: "{{ daskhpc_site.ldap.group_base }}"
    user_base: "{{ daskhpc_site.ldap.user_base }}"
    groups: "{{ daskhpc_model | onprem.daskhpc.ldap_burst_groups }}"
    account: "{{ daskhpc_site.burst.account }}"
    qos: "{{ daskhpc_site.burst.qos }}"
    cluster: "{{ daskhpc_site.name }}"
  register: burst_sync
"""

RETURN = r"""
added:
  description: Users who gained an association (or would, in check mode).
  returned: always
  type: list
  elements: str
  sample: [alice]
removed:
  description: Users who lost their association.
  returned: always
  type: list
  elements: str
  sample: [bob]
default_set:
  description: Users whose default account was set to O(account).
  returned: always
  type: list
  elements: str
qos_fixed:
  description: Users whose association's QOS was corrected.
  returned: always
  type: list
  elements: str
members:
  description: Directory members of O(groups) considered (union).
  returned: always
  type: list
  elements: str
groups:
  description: The accepted members (see RV(members)) of each group in O(groups).
  returned: always
  type: dict
  sample: {datasci: [alice, bob]}
via:
  description: For each group, through which chain of groups each accepted member is in it (outermost first).
  returned: always
  type: dict
  sample: {datasci: {alice: [datasci], bob: [datasci, ml-team]}}
unknown_members:
  description: Group members without a user entry under O(user_base); they get no association.
  returned: always
  type: list
  elements: str
refused:
  description:
    - Group members whose names were refused, with the reason; they get no association (and one they held
      is removed like any non-member's, unless they are in O(exclude_users)).
  returned: always
  type: list
  elements: dict
  sample: [{name: "alice,root", reason: "not a portable account name (...)"}, {name: root, reason: "a system account"}]
diff:
  description: Users holding an association before and after.
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.onprem.daskhpc.plugins.module_utils import account_names
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as ldapu
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import command_argument_spec, ldap_argument_spec
from ansible_collections.onprem.daskhpc.plugins.module_utils import slurm_ldap_sync as sync
from ansible_collections.onprem.daskhpc.plugins.module_utils.sacctmgr import Sacctmgr, SacctmgrError, timed_runner


def main():
    argument_spec = ldap_argument_spec()
    argument_spec.update(
        groups=dict(type="list", elements="str", required=True),
        group_base=dict(type="str", required=True),
        schema=dict(type="str", choices=sorted(ldapu.SCHEMAS)),
        group_schema=dict(type="str", choices=list(ldapu.GROUP_SCHEMAS)),
        user_base=dict(type="str"),
        account=dict(type="str", required=True),
        cluster=dict(type="str"),
        qos=dict(type="str"),
        default_account=dict(type="bool", default=False),
        exclude_users=dict(type="list", elements="str", default=[]),
        missing_groups=dict(type="str", choices=["error", "ignore"], default="error"),
        sacctmgr=dict(type="path", default="sacctmgr"),
        min_uid=dict(type="int", default=account_names.MIN_UID),
        name_pattern=dict(type="str"),
        **command_argument_spec(),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not ldapu.HAS_LDAP3:
        module.fail_json(msg=missing_required_lib("ldap3"), exception=str(ldapu.LDAP3_IMPORT_ERROR))
    p = module.params
    try:
        pattern = account_names.check_settings(p["min_uid"], p["name_pattern"])
    except ValueError as exc:
        module.fail_json(msg="%s. Fix: leave min_uid at 1000 or more and give name_pattern as a Python regular "
                             "expression" % exc)
    sacct = Sacctmgr(run=timed_runner(p["command_timeout"]), binary=p["sacctmgr"])
    try:
        schema = ldapu.schema_settings(p["schema"], p["group_schema"])["schema"]
        conn = ldapu.connect_params(p)
        via = ldapu.effective_members(conn, p["group_base"], p["groups"], schema, p["missing_groups"])
        by_group = {g: sorted(found) for g, found in via.items()}
        members, unknown, refused = sync.directory_members(conn, by_group, p["user_base"], min_uid=p["min_uid"],
                                                           pattern=pattern, schema=schema)
        conn.unbind()
        for item in refused:
            module.warn("directory member %r refused: %s" % (item["name"], item["reason"]))
        if not sync.account_exists(sacct, p["account"], p["cluster"]):
            module.fail_json(msg="Slurm account %r does not exist%s. Fix: create it first (playbooks/slurm.yml, "
                                 "onprem.daskhpc.slurm_account)"
                                 % (p["account"], " on cluster %s" % p["cluster"] if p["cluster"] else ""))
        current = sync.current_users(sacct, p["account"], p["cluster"])
        defaults = sync.default_accounts(sacct) if p["default_account"] else None
        changes = sync.plan(members, current, p["qos"], p["exclude_users"], defaults=defaults, account=p["account"])
        if not module.check_mode:
            sync.apply(sacct, changes, p["account"], p["cluster"], p["qos"])
    except ldapu.LdapError as exc:
        module.fail_json(msg=str(exc))
    except (SacctmgrError, sync.SyncError) as exc:
        module.fail_json(msg=str(exc))
    before = sorted(current)
    after = sorted((set(current) - set(changes["remove"])) | set(changes["add"]))
    module.exit_json(
        changed=any(changes.values()),
        added=changes["add"], removed=changes["remove"], qos_fixed=changes["fix_qos"],
        default_set=changes["set_default"],
        members=members, unknown_members=unknown, refused=refused,
        groups={g: [u for u in uids if u in members] for g, uids in by_group.items()},
        via={g: {u: chain for u, chain in found.items() if u in members} for g, found in via.items()},
        diff={"before": {"account": p["account"], "users": before},
              "after": {"account": p["account"], "users": after}},
    )


if __name__ == "__main__":
    main()
