#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ldap_info
short_description: Check a directory connection from the managed host and read groups and users
version_added: 0.1.0
description:
  - Connects to the directory (TLS verified against O(ca_file)), binds, and reports who it is bound as.
  - Fails with a message naming the fix when the directory is unreachable, TLS cannot be verified,
    the bind is refused, a base DN is missing or a requested group does not exist.
  - Roles run it before writing any client configuration, so a broken directory leaves the
    host's configuration untouched.
  - Never changes anything.
extends_documentation_fragment:
  - onprem.daskhpc.ldap
attributes:
  check_mode:
    support: full
    description: Reads only, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to show.
options:
  base:
    description: Base DN that must exist (searched at scope base). Skipped when omitted.
    type: str
  group_base:
    description: DN under which groups live. Required with O(groups).
    type: str
  groups:
    description: Groups to resolve into member uids.
    type: list
    elements: str
    default: []
  schema:
    description:
      - Directory schema (site model C(ldap.schema)); nested groups are followed for V(rfc2307bis) and V(ad).
      - Without it, O(group_schema) decides.
    type: str
    choices: [ad, rfc2307, rfc2307bis]
  group_schema:
    description: Group object class (older form of O(schema)).
    type: str
    choices: [posixGroup, groupOfNames, group]
  user_base:
    description: DN under which users live. Required with O(users).
    type: str
  users:
    description: Login names to look up (values are escaped, so C(*) matches only a user literally called C(*)).
    type: list
    elements: str
    default: []
  missing_groups:
    description: V(error) fails on a group that does not exist; V(ignore) reports it with no members.
    type: str
    choices: [error, ignore]
    default: error
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Check the directory before touching sssd.conf
  onprem.daskhpc.ldap_info:
    server_uri: "{{ daskhpc_site.ldap.uri }}"
    bind_dn: "{{ daskhpc_site.ldap.bind_dn }}"
    bind_pw: "{{ daskhpc_ldap_reader_password }}"
    base: "{{ daskhpc_site.ldap.base_dn }}"

- name: Who is in datasci
  onprem.daskhpc.ldap_info:
    server_uri: "{{ daskhpc_site.ldap.uri }}"
    bind_dn: "{{ daskhpc_site.ldap.bind_dn }}"
    bind_pw: "{{ daskhpc_ldap_reader_password }}"
    group_base: "{{ daskhpc_site.ldap.group_base }}"
    groups: [datasci]
  register: datasci
"""

RETURN = r"""
whoami:
  description: Authorization identity of the bind (C(dn:...)), empty for anonymous.
  returned: always
  type: str
  sample: dn:cn=reader,dc=lab,dc=daskhpc
groups:
  description: Member uids of each requested group.
  returned: always
  type: dict
  sample: {datasci: [alice, bob]}
users:
  description: The requested users that exist, with their POSIX attributes.
  returned: always
  type: dict
  sample: {alice: {uid: [alice], uidNumber: ["10001"]}}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as ldapu
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import ldap_argument_spec

USER_ATTRIBUTES = ["uid", "cn", "uidNumber", "gidNumber", "homeDirectory", "loginShell"]


def main():
    argument_spec = ldap_argument_spec()
    argument_spec.update(
        base=dict(type="str"),
        group_base=dict(type="str"),
        groups=dict(type="list", elements="str", default=[]),
        schema=dict(type="str", choices=sorted(ldapu.SCHEMAS)),
        group_schema=dict(type="str", choices=list(ldapu.GROUP_SCHEMAS)),
        user_base=dict(type="str"),
        users=dict(type="list", elements="str", default=[]),
        missing_groups=dict(type="str", choices=["error", "ignore"], default="error"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not ldapu.HAS_LDAP3:
        module.fail_json(msg=missing_required_lib("ldap3"), exception=str(ldapu.LDAP3_IMPORT_ERROR))
    p = module.params
    for option, base in (("groups", "group_base"), ("users", "user_base")):
        if p[option] and not p[base]:
            module.fail_json(msg="%s needs %s. Fix: give %s (daskhpc_site.ldap.%s)" % (option, base, base, base))
    try:
        schema = ldapu.schema_settings(p["schema"], p["group_schema"])["schema"]
        conn = ldapu.connect_params(p)
        if p["base"] and ldapu.read_entry(conn, p["base"], ["objectClass"]) is None:
            raise ldapu.LdapError("base DN %s does not exist in the directory at %s (or the bind DN may not "
                                  "read it). Fix: check ldap.base_dn in the site model" % (p["base"], p["server_uri"]))
        groups = ldapu.resolve_groups(conn, p["group_base"], p["groups"], schema,
                                      p["missing_groups"]) if p["groups"] else {}
        users = ldapu.find_users(conn, p["user_base"], p["users"], USER_ATTRIBUTES, schema) if p["users"] else {}
        who = ldapu.whoami(conn)
    except ldapu.LdapError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, whoami=who, groups=groups, users=users)


if __name__ == "__main__":
    main()
