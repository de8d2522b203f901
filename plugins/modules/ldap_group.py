#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ldap_group
short_description: Manage a group and its members in an LDAP directory
version_added: 0.1.0
description:
  - Creates, updates or removes the group C(cn=<name>,<base>).
  - With O(schema=posixGroup) members are stored as C(memberUid) (login names); with
    O(schema=groupOfNames) as C(member) (user DNs under O(user_base)); O(schema=group) is
    Active Directory's group class, also with C(member).
  - O(members_mode) decides whether O(members) is the exact member list, members to add,
    or members to remove.
extends_documentation_fragment:
  - onprem.daskhpc.ldap
attributes:
  check_mode:
    support: full
    description: Reports the members it would add or remove; writes nothing to the directory.
  diff_mode:
    support: full
    description: Shows the group entry's attributes before and after.
options:
  name:
    description: Group name (C(cn)).
    type: str
    required: true
  base:
    description: DN under which groups live, e.g. C(ou=groups,dc=example,dc=org).
    type: str
    required: true
  state:
    description: Whether the group exists.
    type: str
    choices: [present, absent]
    default: present
  schema:
    description: Group object class; usually C(daskhpc_site.ldap.group_schema).
    type: str
    choices: [posixGroup, groupOfNames, group]
    default: posixGroup
  gid_number:
    description: Numeric group ID. Required for O(schema=posixGroup) when O(state=present).
    type: int
  description:
    description: Free-text description.
    type: str
  members:
    description: Login names (uids). Not touched when omitted.
    type: list
    elements: str
  members_mode:
    description:
      - V(exact) makes O(members) the whole member list; V(append) adds them, keeping others;
        V(remove) removes them, keeping others.
    type: str
    choices: [exact, append, remove]
    default: exact
  user_base:
    description: DN under which users live; needed for O(schema=groupOfNames) member DNs.
    type: str
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: datasci has exactly alice and bob
  onprem.daskhpc.ldap_group:
    server_uri: "{{ daskhpc_site.ldap.uri }}"
    bind_dn: "cn=admin,{{ daskhpc_site.ldap.base_dn }}"
    bind_pw: "{{ daskhpc_ldap_admin_password }}"
    base: "{{ daskhpc_site.ldap.group_base }}"
    name: datasci
    gid_number: 20001
    members: [alice, bob]

- name: Take bob out of datasci, leaving everyone else
  onprem.daskhpc.ldap_group:
    server_uri: "{{ daskhpc_site.ldap.uri }}"
    bind_dn: "cn=admin,{{ daskhpc_site.ldap.base_dn }}"
    bind_pw: "{{ daskhpc_ldap_admin_password }}"
    base: "{{ daskhpc_site.ldap.group_base }}"
    name: datasci
    gid_number: 20001
    members: [bob]
    members_mode: remove
"""

RETURN = r"""
dn:
  description: DN of the group entry.
  returned: always
  type: str
  sample: cn=datasci,ou=groups,dc=lab,dc=daskhpc
members:
  description: Member uids after the change (or as they would be in check mode).
  returned: when state is present
  type: list
  elements: str
  sample: [alice, bob]
added:
  description: Members added.
  returned: always
  type: list
  elements: str
removed:
  description: Members removed.
  returned: always
  type: list
  elements: str
diff:
  description: Entry before and after.
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as ldapu
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import ldap_argument_spec


def main():
    argument_spec = ldap_argument_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        base=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        schema=dict(type="str", choices=list(ldapu.GROUP_SCHEMAS), default="posixGroup"),
        gid_number=dict(type="int"),
        description=dict(type="str"),
        members=dict(type="list", elements="str"),
        members_mode=dict(type="str", choices=["exact", "append", "remove"], default="exact"),
        user_base=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("schema", "groupOfNames", ("user_base",))])
    if not ldapu.HAS_LDAP3:
        module.fail_json(msg=missing_required_lib("ldap3"), exception=str(ldapu.LDAP3_IMPORT_ERROR))
    p = module.params
    dn = ldapu.group_dn(p["name"], p["base"])
    try:
        conn = ldapu.connect_params(p)
        if p["state"] == "absent":
            result = ldapu.delete_entry(conn, dn, module.check_mode)
            result.update(added=[], removed=[])
        else:
            result = ldapu.ensure_group(conn, dn, p, module.check_mode)
    except ldapu.LdapError as exc:
        module.fail_json(msg=str(exc), dn=dn)
    result["diff"] = {"before": result.pop("before"), "after": result.pop("after")}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
