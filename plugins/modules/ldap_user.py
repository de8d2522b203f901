#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ldap_user
short_description: Manage a POSIX user account in an LDAP directory
version_added: 0.1.0
description:
  - Creates, updates or removes a user entry C(uid=<uid>,<base>) with the object classes
    C(inetOrgPerson), C(posixAccount) and C(shadowAccount).
  - Only the attributes given are managed; others on the entry are left alone.
  - The password is stored as a salted C({SSHA}) hash, written only when the stored hash
    does not already match.
extends_documentation_fragment:
  - onprem.daskhpc.ldap
attributes:
  check_mode:
    support: full
    description: Reports what it would create, change or remove; writes nothing to the directory.
  diff_mode:
    support: full
    description: Shows the user entry's attributes before and after (passwords masked).
options:
  uid:
    description: Login name.
    type: str
    required: true
  base:
    description: DN under which users live, e.g. C(ou=people,dc=example,dc=org).
    type: str
    required: true
  state:
    description: Whether the user exists.
    type: str
    choices: [present, absent]
    default: present
  uid_number:
    description: Numeric user ID. Required when O(state=present).
    type: int
  gid_number:
    description: Numeric primary group ID. Required when O(state=present).
    type: int
  cn:
    description: Full name. Defaults to O(uid).
    type: str
  sn:
    description: Surname. Defaults to the last word of O(cn).
    type: str
  given_name:
    description: Given name.
    type: str
  mail:
    description: E-mail address.
    type: str
  home_directory:
    description: Home directory. Defaults to C(/home/<uid>).
    type: str
  login_shell:
    description: Login shell.
    type: str
    default: /bin/bash
  password:
    description: Clear-text password; stored hashed as C({SSHA}).
    type: str
  update_password:
    description:
      - V(always) writes a new hash whenever the stored one does not match O(password);
        V(on_create) sets the password only when the entry is created.
    type: str
    choices: [always, on_create]
    default: always
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Ensure alice exists
  onprem.daskhpc.ldap_user:
    server_uri: "{{ daskhpc_site.ldap.uri }}"
    bind_dn: "cn=admin,{{ daskhpc_site.ldap.base_dn }}"
    bind_pw: "{{ daskhpc_ldap_admin_password }}"
    base: "{{ daskhpc_site.ldap.user_base }}"
    uid: alice
    uid_number: 10001
    gid_number: 100
    cn: Alice Example
    password: "{{ vault_alice_password }}"

- name: Remove a user who left
  onprem.daskhpc.ldap_user:
    server_uri: ldaps://ldap.example.org
    bind_dn: cn=admin,dc=example,dc=org
    bind_pw: "{{ vault_ldap_admin_password }}"
    base: ou=people,dc=example,dc=org
    uid: mallory
    state: absent
"""

RETURN = r"""
dn:
  description: DN of the user entry.
  returned: always
  type: str
  sample: uid=alice,ou=people,dc=lab,dc=daskhpc
changes:
  description: Attributes written (or that would be written in check mode).
  returned: always
  type: list
  elements: str
  sample: [loginShell]
password_changed:
  description: Whether a new password hash was (or would be) written.
  returned: always
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
        uid=dict(type="str", required=True),
        base=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        uid_number=dict(type="int"),
        gid_number=dict(type="int"),
        cn=dict(type="str"),
        sn=dict(type="str"),
        given_name=dict(type="str"),
        mail=dict(type="str"),
        home_directory=dict(type="str"),
        login_shell=dict(type="str", default="/bin/bash"),
        password=dict(type="str", no_log=True),
        update_password=dict(type="str", choices=["always", "on_create"], default="always", no_log=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("state", "present", ("uid_number", "gid_number"))])
    if not ldapu.HAS_LDAP3:
        module.fail_json(msg=missing_required_lib("ldap3"), exception=str(ldapu.LDAP3_IMPORT_ERROR))
    p = module.params
    dn = ldapu.user_dn(p["uid"], p["base"])
    try:
        conn = ldapu.connect_params(p)
        if p["state"] == "absent":
            result = ldapu.delete_entry(conn, dn, module.check_mode)
        else:
            result = ldapu.ensure_entry(conn, dn, ldapu.USER_CLASSES, ldapu.user_attributes(p),
                                        password=p["password"], update_password=p["update_password"],
                                        check_mode=module.check_mode)
    except ldapu.LdapError as exc:
        module.fail_json(msg=str(exc), dn=dn)
    result.setdefault("changes", [])
    result.setdefault("password_changed", False)
    result["diff"] = {"before": result.pop("before"), "after": result.pop("after")}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
