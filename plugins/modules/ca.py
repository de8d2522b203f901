#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ca
short_description: Create the site's internal CA (offline root and issuing intermediate)
version_added: 0.1.0
description:
  - Creates a self-signed root CA and an issuing intermediate signed by it in I(ca_dir), with
    C(cryptography) (no openssl binary).
  - Both keys are encrypted with I(passphrase) and written with mode 0600. The root key is only needed
    to create or renew the intermediate, so it can be kept offline between those runs.
  - Renews the intermediate (keeping its key, so certificates it issued stay valid) when it is inside
    I(intermediate_renew_before_days) of its expiry.
  - Writes the site bundle C(ca.pem) (root + intermediate) for clients' trust stores.
  - Fails with a message naming the fix on a wrong passphrase, a missing root key when it is needed,
    an expired root, or an attempt to rename an existing CA; nothing is written in those cases.
options:
  ca_dir:
    description: Directory that holds the CA (the site model's C(ca.dir)). Created with mode 0700.
    type: path
    required: true
  name:
    description: The CA's name (the site model's C(ca.name)); the root is C(<name> Root), the intermediate
      C(<name> Issuing CA).
    type: str
    required: true
  passphrase:
    description: Passphrase that encrypts both CA keys, at least 12 characters. Keep it in a vault.
    type: str
    required: true
  key_type:
    description: Key type for new CA keys.
    type: str
    choices: [ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096]
    default: ecdsa-p256
  root_days:
    description: Validity of a new root, in days.
    type: int
    default: 3650
  intermediate_days:
    description: Validity of a new or renewed intermediate, in days (capped at the root's expiry).
    type: int
    default: 1095
  intermediate_renew_before_days:
    description: Renew the intermediate when it expires within this many days.
    type: int
    default: 90
attributes:
  check_mode:
    support: full
    description: Reports what would be created or renewed; writes nothing.
  diff_mode:
    support: full
    description: Shows the root and intermediate (subject, serial, expiry) before and after.
requirements:
  - cryptography >= 42 (on the host that runs the module)
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Create the site CA
  onprem.daskhpc.ca:
    ca_dir: /etc/daskhpc/ca
    name: daskhpc lab CA
    passphrase: "{{ daskhpc_ca_passphrase }}"
"""

RETURN = r"""
actions:
  description: What was (or in check mode would be) done, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{action: root, reason: no root certificate}, {action: intermediate, reason: new root}]
ca:
  description: Root and intermediate subject, serial and expiry, the bundle path, and whether the root key
    is present on this host.
  returned: always
  type: dict
bundle:
  description: Path of the site bundle (root + intermediate).
  returned: always
  type: str
  sample: /etc/daskhpc/ca/ca.pem
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki


def main():
    module = AnsibleModule(
        argument_spec={
            "ca_dir": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "passphrase": {"type": "str", "required": True, "no_log": True},
            "key_type": {"type": "str", "default": "ecdsa-p256", "choices": list(pki.KEY_TYPES)},
            "root_days": {"type": "int", "default": 3650},
            "intermediate_days": {"type": "int", "default": 1095},
            "intermediate_renew_before_days": {"type": "int", "default": 90},
        },
        supports_check_mode=True,
    )
    if not pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography >= 42"), exception=pki.CRYPTOGRAPHY_IMPORT_ERROR)
    p = module.params
    try:
        before = pki.ca_summary(p["ca_dir"])
        actions, after = pki.ensure_ca(
            p["ca_dir"], p["name"], p["passphrase"], key_type=p["key_type"], root_days=p["root_days"],
            intermediate_days=p["intermediate_days"],
            intermediate_renew_before_days=p["intermediate_renew_before_days"], check_mode=module.check_mode)
    except pki.PkiError as exc:
        module.fail_json(msg=str(exc), problem=exc.problem, fix=exc.fix)
    result = {
        "changed": bool(actions),
        "actions": [{"action": a, "reason": r} for a, r in actions],
        "ca": after,
        "bundle": after["bundle"],
    }
    if module._diff:
        result["diff"] = {"before": {k: before.get(k) for k in ("root", "intermediate")},
                          "after": {k: after.get(k) for k in ("root", "intermediate")}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
