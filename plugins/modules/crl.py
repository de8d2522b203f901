#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: crl
short_description: Revoke certificates by serial and keep the site CRL current
version_added: 0.1.0
description:
  - Appends a revocation record (serial, reason, time, who) to the CA's ledger for each serial in
    I(revoke) that is not revoked yet, and writes C(crl.pem) in I(ca_dir), signed by the issuing intermediate.
  - The CRL is rewritten only when the set of revoked serials changed, when it is missing or signed by
    another key, or when its next update is within I(renew_before_days); otherwise nothing changes.
  - A serial the ledger does not know fails with the fix; revoking a revoked serial again is a no-op.
  - An unfinished last ledger record (a write cut short) is moved to C(ledger.jsonl.torn-<time>) first, with a
    warning, so the CRL can always be signed; damage before the last record fails with the fix.
extends_documentation_fragment:
  - onprem.daskhpc.pki
options:
  revoke:
    description: Certificates to revoke.
    type: list
    elements: dict
    default: []
    suboptions:
      serial:
        description: Serial in hex (colons and a C(0x) prefix are accepted).
        type: str
        required: true
      reason:
        description: RFC 5280 reason.
        type: str
        default: unspecified
        choices: [unspecified, key_compromise, ca_compromise, affiliation_changed, superseded,
                  cessation_of_operation, certificate_hold, privilege_withdrawn]
  days:
    description: Days from now to the CRL's next update.
    type: int
    default: 7
  renew_before_days:
    description: Re-sign the CRL when its next update is within this many days.
    type: int
    default: 3
attributes:
  check_mode:
    support: full
    description: Reports revocations and CRL updates that would happen; writes nothing.
  diff_mode:
    support: full
    description: Shows the revoked serials and next update before and after.
requirements:
  - cryptography >= 42 (on the host that runs the module)
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Revoke bob's credential (he left the group)
  onprem.daskhpc.crl:
    ca_dir: /etc/daskhpc/ca
    ca_passphrase: "{{ daskhpc_ca_passphrase }}"
    revoke:
      - serial: 4A6AA2C9DEA64E5860118EB4F9D1D75E283CB752
        reason: affiliation_changed

- name: Keep the CRL fresh
  onprem.daskhpc.crl:
    ca_dir: /etc/daskhpc/ca
    ca_passphrase: "{{ daskhpc_ca_passphrase }}"
"""

RETURN = r"""
revoked:
  description: Serials revoked by this run.
  returned: always
  type: list
  elements: str
revoked_count:
  description: Serials on the CRL.
  returned: always
  type: int
crl_reason:
  description: Why the CRL was (or would be) re-signed; null if it was current.
  returned: always
  type: str
next_update:
  description: Next update of the CRL in place (UTC).
  returned: when a CRL is in place
  type: str
path:
  description: Path of the CRL.
  returned: always
  type: str
  sample: /etc/daskhpc/ca/crl.pem
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import pki_argument_spec


def main():
    module = AnsibleModule(
        argument_spec={
            **pki_argument_spec(),
            "revoke": {"type": "list", "elements": "dict", "default": [], "options": {
                "serial": {"type": "str", "required": True},
                "reason": {"type": "str", "default": "unspecified", "choices": list(pki.REVOCATION_REASONS)},
            }},
            "days": {"type": "int", "default": 7},
            "renew_before_days": {"type": "int", "default": 3},
        },
        supports_check_mode=True,
    )
    if not pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography >= 42"), exception=pki.CRYPTOGRAPHY_IMPORT_ERROR)
    p = module.params
    try:
        # for the diff only; ensure_crl repairs an unfinished tail and says so
        before = pki.read_ledger(pki.ca_paths(p["ca_dir"])["ledger"], repair=False)
        result = pki.ensure_crl(p["ca_dir"], p["ca_passphrase"], revoke=p["revoke"], days=p["days"],
                                renew_before_days=p["renew_before_days"], check_mode=module.check_mode,
                                requested_by=p["requested_by"], warn=module.warn)
    except pki.PkiError as exc:
        module.fail_json(msg=str(exc), problem=exc.problem, fix=exc.fix)
    if module._diff:
        revoked_before = sorted(s for s, e in before.items() if e.get("revoked_at"))
        result["diff"] = {"before": {"revoked": revoked_before},
                          "after": {"revoked": sorted(set(revoked_before) | set(result["revoked"])),
                                    "next_update": result.get("next_update")}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
