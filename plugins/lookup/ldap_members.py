# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ldap_members
short_description: Members of LDAP groups, for playbooks and audit reports
version_added: 0.1.0
description:
  - Returns the uids of the members of the given groups (the union, sorted), or with
    O(attributes) one dictionary per member with the requested user attributes.
  - Searches are paged and every group and user name is escaped, so a name such as
    C(*)(uid=*) matches only a group literally called that.
  - Runs on the controller; TLS is verified against O(ca_file).
  - O(ldap) takes the site model's C(ldap) section; the individual options override it.
options:
  _terms:
    description: Group names.
    required: true
    type: list
    elements: str
  ldap:
    description: The site model's C(ldap) section (C(daskhpc_site.ldap)) supplying uri, start_tls, bases, bind_dn.
    type: dict
    default: {}
  server_uri:
    description: Directory URI.
    type: str
  start_tls:
    description: StartTLS on C(ldap://) URIs.
    type: bool
  ca_file:
    description: CA bundle the directory's certificate is verified against.
    type: path
    default: /etc/daskhpc/tls/ca.pem
  bind_dn:
    description: DN to bind as.
    type: str
  bind_pw:
    description: Its password.
    type: str
  group_base:
    description: DN under which groups live.
    type: str
  user_base:
    description: DN under which users live (needed with O(attributes)).
    type: str
  schema:
    description:
      - Directory schema (site model C(ldap.schema)) - V(rfc2307), V(rfc2307bis) or V(ad). Nested groups are
        followed for the last two; with V(ad) the login name is C(sAMAccountName).
    type: str
    choices: [ad, rfc2307, rfc2307bis]
  group_schema:
    description: Group object class (older form of O(schema)).
    type: str
    choices: [posixGroup, groupOfNames, group]
  attributes:
    description: User attributes to return; each result is then a dict with C(uid), C(groups) and these.
    type: list
    elements: str
    default: []
  missing:
    description: V(error) fails on a group that does not exist; V(ignore) treats it as empty.
    type: str
    choices: [error, ignore]
    default: error
  timeout:
    description: Seconds to wait for the connection and each answer.
    type: int
    default: 5
"""

EXAMPLES = r"""
- name: Who may burst
  ansible.builtin.debug:
    msg: "{{ lookup('onprem.daskhpc.ldap_members', 'datasci', ldap=daskhpc_site.ldap,
             bind_pw=daskhpc_ldap_reader_password) }}"

- name: Members with names, for an access review
  ansible.builtin.set_fact:
    burst_people: "{{ query('onprem.daskhpc.ldap_members', 'datasci', 'research', ldap=daskhpc_site.ldap,
                      bind_pw=daskhpc_ldap_reader_password, attributes=['cn', 'uidNumber']) }}"
"""

RETURN = r"""
_raw:
  description:
    - Without O(attributes), the sorted member uids.
    - With O(attributes), one dict per member - C(uid), C(groups) (which of the given groups
      they are in), C(via) (for each of those groups, the chain of groups through which they are in it,
      outermost first) and each requested attribute (a list of strings); members with no user entry
      are returned with C(missing_entry=true).
    - Membership is effective membership, nested groups included, read by the same code as
      onprem.daskhpc.slurm_ldap_sync and the audit.
  type: list
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as ldapu


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if not ldapu.HAS_LDAP3:
            raise AnsibleLookupError("ldap_members needs the Python library ldap3 on the controller "
                                     "(pip install ldap3)")
        model = self.get_option("ldap") or {}

        def opt(name, model_key=None, default=None):
            value = self.get_option(name)
            if value is None:
                value = model.get(model_key or name, default)
            return value

        uri = opt("server_uri", "uri")
        group_base = opt("group_base")
        if not uri or not group_base:
            raise AnsibleLookupError("ldap_members needs server_uri and group_base (or ldap=daskhpc_site.ldap)")
        attributes = self.get_option("attributes")
        user_base = opt("user_base")
        if attributes and not user_base:
            raise AnsibleLookupError("ldap_members: attributes need user_base (or ldap=daskhpc_site.ldap)")
        groups = [str(t) for t in terms]
        try:
            conn = ldapu.connect(uri, opt("bind_dn"), self.get_option("bind_pw"),
                                 start_tls=opt("start_tls", default=True), ca_file=self.get_option("ca_file"),
                                 timeout=self.get_option("timeout"))
            try:
                schema = ldapu.schema_settings(opt("schema"), opt("group_schema"))["schema"]
                via = ldapu.effective_members(conn, group_base, groups, schema, self.get_option("missing"))
                members = {group: sorted(found) for group, found in via.items()}
                if not attributes:
                    return sorted({uid for uids in members.values() for uid in uids})
                return ldapu.member_records(conn, user_base, members, attributes, schema, via=via)
            finally:
                conn.unbind()
        except ldapu.LdapError as exc:
            raise AnsibleLookupError("ldap_members: %s" % exc) from exc
