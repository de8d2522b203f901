#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: certificate_batch
short_description: Issue many certificates (all users, all hosts) from the site's issuing CA in one task
version_added: 0.1.0
description:
  - The batch form of M(onprem.daskhpc.certificate), with the same idempotence rules, for thousands of
    certificates in one task. The CA key is decrypted once, every request is validated before anything is
    written, and all new issuances go to the ledger in one locked, fsynced, read-back append; if that fails
    the task fails and none of them is deployed.
  - Each item of I(certificates) takes the per-certificate options of M(onprem.daskhpc.certificate)
    (C(path), C(privatekey_path), C(subject), C(subject_alt_names), C(profile), C(key_type), C(days),
    C(renew_before_days), C(rotate_key), C(force), C(owner), C(group), C(mode), C(privatekey_mode),
    C(create_dirs), C(dir_mode), C(backup), C(home)); I(defaults) fills in what an item leaves out.
  - Root never follows a path someone else controls (see M(onprem.daskhpc.certificate)). An item whose
    directories or files are not safe to use - a symlink, a FIFO, a directory of another account, a home
    that is not the owner's - is refused and reported in RV(refused) with a warning; the other items go on.
extends_documentation_fragment:
  - onprem.daskhpc.pki
options:
  certificates:
    description: The certificates, one mapping each (see the description).
    type: list
    elements: dict
    required: true
  defaults:
    description: Options applied to every item that does not set them (e.g. C(profile), C(days)).
    type: dict
    default: {}
  fsync:
    description: fsync every key and certificate file before it replaces the old one. Turn off only on
      scratch file systems; the ledger is always fsynced.
    type: bool
    default: true
  return_items:
    description: Return one entry per certificate (C(certificates)); otherwise only the changed ones.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports which certificates would be issued and why; writes nothing.
  diff_mode:
    support: full
    description: Shows serial, subject, SANs and expiry before and after for the changed certificates.
requirements:
  - cryptography >= 42 (on the host that runs the module)
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Dask credentials for every data scientist
  onprem.daskhpc.certificate_batch:
    ca_dir: /etc/daskhpc/ca
    ca_passphrase: "{{ daskhpc_ca_passphrase }}"
    defaults: {profile: user, days: 7, renew_before_days: 2, create_dirs: true}
    certificates:
      - {path: /home/alice/.daskhpc/tls/user.pem, privatekey_path: /home/alice/.daskhpc/tls/user.key,
         subject: {CN: alice}, owner: alice, group: alice}
      - {path: /home/bob/.daskhpc/tls/user.pem, privatekey_path: /home/bob/.daskhpc/tls/user.key,
         subject: {CN: bob}, owner: bob, group: bob}
"""

RETURN = r"""
issued:
  description: Number of certificates issued (or, in check mode, to be issued).
  returned: always
  type: int
unchanged:
  description: Number of certificates kept as they were.
  returned: always
  type: int
changed_items:
  description: The certificates that changed, with path, serial, expiry and reasons.
  returned: always
  type: list
  elements: dict
refused:
  description: Items not touched because a path was not safe for root to use, with the reason. An item
    refused after issuance is in the ledger but was not written.
  returned: always
  type: list
  elements: dict
  sample: [{path: /home/mallory/.daskhpc/tls/user.pem, reason: /home/mallory/.daskhpc/tls is a symlink}]
certificates:
  description: Every certificate with path, serial, expiry and reasons (with I(return_items)).
  returned: when return_items
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import pki_argument_spec


def _item_request(item):
    req = dict(item)
    if "privatekey_mode" in req:
        req["key_mode"] = req.pop("privatekey_mode")
    return req


def _brief(result):
    return {"path": result["path"], "serial": result["after"].get("serial"),
            "not_after": result["after"].get("not_after"), "reasons": result["reasons"]}


def main():
    module = AnsibleModule(
        argument_spec={
            **pki_argument_spec(),
            "certificates": {"type": "list", "elements": "dict", "required": True},
            "defaults": {"type": "dict", "default": {}},
            "fsync": {"type": "bool", "default": True},
            "return_items": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    if not pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography >= 42"), exception=pki.CRYPTOGRAPHY_IMPORT_ERROR)
    p = module.params
    defaults = {"profile": "host", "key_type": "ecdsa-p256", "days": 90, "renew_before_days": 30}
    defaults.update(_item_request(p["defaults"]))
    try:
        results, records = pki.ensure_certificates(
            p["ca_dir"], p["ca_passphrase"], [_item_request(i) for i in p["certificates"]], defaults=defaults,
            check_mode=module.check_mode, requested_by=p["requested_by"], fsync=p["fsync"],
            warn=module.warn)
    except pki.PkiError as exc:
        module.fail_json(msg=str(exc), problem=exc.problem, fix=exc.fix)
    changed = [r for r in results if r["changed"]]
    refused = [{"path": r["path"], "reason": r["refused"]} for r in results if r.get("refused")]
    for item in refused:
        module.warn("refused %s: %s" % (item["path"], item["reason"]))
    result = {
        "changed": bool(changed or records),  # a refused item may already be in the ledger
        "issued": sum(1 for r in changed if r["after"] is not r["before"]),
        "unchanged": len(results) - len(changed) - len(refused),
        "changed_items": [_brief(r) for r in changed],
        "refused": refused,
    }
    if p["return_items"]:
        result["certificates"] = [_brief(r) for r in results]
    if module._diff:
        result["diff"] = {"before": {r["path"]: r["before"] for r in changed},
                          "after": {r["path"]: r["after"] for r in changed}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
