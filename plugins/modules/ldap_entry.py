#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ldap_entry
short_description: Manage one plain LDAP entry (suffix, organisational units, service accounts)
version_added: 0.1.0
description:
  - Creates, updates or removes the entry at O(dn).
  - For the directory's skeleton - the suffix entry, C(ou=people), C(ou=groups) - and for
    service accounts such as the read-only bind DN that nodes use. Users and groups have
    their own modules, M(onprem.daskhpc.ldap_user) and M(onprem.daskhpc.ldap_group).
  - Only the attributes given are managed; object classes are only ever added.
extends_documentation_fragment:
  - onprem.daskhpc.ldap
attributes:
  check_mode:
    support: full
    description: Reports what it would create, change or remove; writes nothing to the directory.
  diff_mode:
    support: full
    description: Shows the entry's attributes before and after (passwords masked).
options:
  dn:
    description: DN of the entry.
    type: str
    required: true
  state:
    description: Whether the entry exists.
    type: str
    choices: [present, absent]
    default: present
  object_class:
    description: Object classes the entry must have. Required when O(state=present).
    type: list
    elements: str
  attributes:
    description: Attribute values, a string or a list of strings each. An empty list removes the attribute.
    type: dict
    default: {}
  password:
    description: Clear-text password, stored as a salted C({SSHA}) hash in C(userPassword) only when it changed.
    type: str
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Read-only account the nodes bind as
  onprem.daskhpc.ldap_entry:
    server_uri: "{{ daskhpc_site.ldap.uri }}"
    bind_dn: "cn=admin,{{ daskhpc_site.ldap.base_dn }}"
    bind_pw: "{{ daskhpc_ldap_admin_password }}"
    dn: "{{ daskhpc_site.ldap.bind_dn }}"
    object_class: [organizationalRole, simpleSecurityObject]
    attributes:
      cn: reader
      description: read-only bind for sssd
    password: "{{ daskhpc_ldap_reader_password }}"
"""

RETURN = r"""
dn:
  description: DN of the entry.
  returned: always
  type: str
changes:
  description: Attributes written (or that would be in check mode).
  returned: when state is present
  type: list
  elements: str
password_changed:
  description: Whether a new password hash was (or would be) written.
  returned: when state is present
  type: bool
diff:
  description: Entry before and after (passwords masked).
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as ldapu
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import ldap_argument_spec


def main():
    argument_spec = ldap_argument_spec()
    argument_spec.update(
        dn=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        object_class=dict(type="list", elements="str"),
        attributes=dict(type="dict", default={}),
        password=dict(type="str", no_log=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("state", "present", ("object_class",))])
    if not ldapu.HAS_LDAP3:
        module.fail_json(msg=missing_required_lib("ldap3"), exception=str(ldapu.LDAP3_IMPORT_ERROR))
    p = module.params
    try:
        conn = ldapu.connect_params(p)
        if p["state"] == "absent":
            result = ldapu.delete_entry(conn, p["dn"], module.check_mode)
        else:
            result = ldapu.ensure_entry(conn, p["dn"], p["object_class"], p["attributes"],
                                        password=p["password"], check_mode=module.check_mode)
    except ldapu.LdapError as exc:
        module.fail_json(msg=str(exc), dn=p["dn"])
    result["diff"] = {"before": result.pop("before"), "after": result.pop("after")}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
