# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Connection options shared by every onprem.daskhpc LDAP module.
    DOCUMENTATION = r"""
options:
  server_uri:
    description:
      - The directory's URI, C(ldaps://host[:port]) or C(ldap://host[:port]) (with O(start_tls)),
        or C(ldapi://) for a local socket.
      - Usually C(daskhpc_site.ldap.uri) from the site model.
    type: str
    required: true
  start_tls:
    description:
      - Upgrade an C(ldap://) connection with StartTLS before binding.
      - The server certificate is always verified against O(ca_file); there is no option to skip it.
    type: bool
    default: true
  ca_file:
    description:
      - CA bundle that signed the directory's certificate.
    type: path
    default: /etc/daskhpc/tls/ca.pem
  bind_dn:
    description:
      - DN to bind as. Anonymous when omitted.
    type: str
  bind_pw:
    description:
      - Password of O(bind_dn). Keep it in a vault.
    type: str
  timeout:
    description:
      - Seconds to wait for the connection and for each answer.
    type: int
    default: 5
requirements:
  - ldap3 (Python library, on the managed host)
notes:
  - Errors name what failed and how to fix it - directory unreachable, TLS not verifiable,
    bind refused, group not found.
"""
