#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: certificate
short_description: Issue a host, service or user certificate from the site's issuing CA
version_added: 0.1.0
description:
  - Generates a private key (if there is none of the right type) and a certificate signed by the issuing
    intermediate in I(ca_dir), on the host that holds the CA, with C(cryptography).
  - Idempotent. Re-issues only when the subject, the SANs, the key (type or mismatch), the issuer or chain,
    or the profile changed, or when the certificate is inside its renewal window
    (I(renew_before_days) before expiry). Otherwise the serial stays the same.
  - Every issuance is appended to the CA's ledger (C(ledger.jsonl)) before the files are written, fsynced and
    read back; when it cannot be recorded (e.g. a full disk) the task fails and nothing is deployed. An
    unfinished last ledger record left by an earlier cut-short write is moved to C(ledger.jsonl.torn-<time>)
    first, with a warning.
  - The certificate file holds the leaf followed by the intermediate (a full chain up to the root).
  - The key is written with mode 0600 (or I(privatekey_mode)) and the given owner before it becomes visible.
  - Invalid SANs, a wrong passphrase, a missing or expired CA fail with the fix in the message; nothing is
    written then.
  - Root never follows a path someone else controls. Directories are walked from C(/) one at a time
    without following symlinks (root's own symlinks in directories only root can change excepted);
    below root's directories only directories of I(owner) are used; files are read, created, chowned and
    chmodded through their open descriptors and renamed into place. A symlink, a FIFO, or a directory or
    file of another account on the way fails the task, naming it.
extends_documentation_fragment:
  - onprem.daskhpc.pki
options:
  path:
    description: Certificate file (leaf + intermediate, PEM).
    type: path
    required: true
  privatekey_path:
    description: Private key file. Defaults to I(path) with C(.pem)/C(.crt) replaced by C(.key).
    type: path
  subject:
    description: Subject fields (C, ST, L, O, OU, CN); CN is required. User certificates always carry
      C(OU=users) (the Dask identity check relies on it).
    type: dict
    required: true
  subject_alt_names:
    description:
      - SANs as C(DNS:name), C(IP:address) or a bare name or address.
    type: list
    elements: str
    default: []
  profile:
    description:
      - C(host) and C(service) - serverAuth and clientAuth.
      - C(user) - clientAuth and serverAuth (a user's certificate also serves that user's Dask scheduler).
    type: str
    choices: [host, service, user]
    default: host
  key_type:
    description: Key type; a key of another type is replaced.
    type: str
    choices: [ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096]
    default: ecdsa-p256
  days:
    description: Validity in days (capped at the issuing CA's expiry).
    type: int
    default: 90
  renew_before_days:
    description: Re-issue when the certificate expires within this many days.
    type: int
    default: 30
  rotate_key:
    description: Generate a new key whenever the certificate is re-issued.
    type: bool
    default: false
  public_key:
    description:
      - PEM public key of a key generated on the host that uses it (e.g. by
        M(community.crypto.openssl_privatekey) and M(community.crypto.openssl_publickey) there).
      - The CA signs it and writes only the certificate; no private key is made, read or written here,
        and I(privatekey_path), I(rotate_key) and I(privatekey_mode) do not apply.
      - The certificate is re-issued when it does not carry this key.
    type: str
  force:
    description: Re-issue even if nothing changed.
    type: bool
    default: false
  owner:
    description: Owner (name or uid) of the key and certificate.
    type: str
  group:
    description: Group (name or gid) of the key and certificate.
    type: str
  mode:
    description: Mode of the certificate file.
    type: raw
    default: '0644'
  privatekey_mode:
    description: Mode of the key file.
    type: raw
    default: '0600'
  create_dirs:
    description: Create missing parent directories with I(dir_mode) and the owner.
    type: bool
    default: false
  dir_mode:
    description: Mode of directories created by I(create_dirs).
    type: raw
    default: '0700'
  backup:
    description: Keep a timestamped copy of a replaced certificate or key.
    type: bool
    default: false
  home:
    description:
      - The home directory of I(owner), for a credential written into a user's home. I(path) and
        I(privatekey_path) must lie inside it; the home must be a directory owned by I(owner) (not a
        symlink) whose parents only root controls, and so must every directory below it on the way to
        the files. With I(create_dirs) a missing home is created as the owner's (its parents never).
    type: path
attributes:
  check_mode:
    support: full
    description: Reports whether (and why) the certificate would be issued; writes nothing.
  diff_mode:
    support: full
    description: Shows serial, subject, SANs and expiry before and after.
requirements:
  - cryptography >= 42 (on the host that runs the module)
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Host certificate for slapd
  onprem.daskhpc.certificate:
    ca_dir: /etc/daskhpc/ca
    ca_passphrase: "{{ daskhpc_ca_passphrase }}"
    path: /etc/daskhpc/tls/slapd.pem
    privatekey_path: /etc/daskhpc/tls/slapd.key
    subject: {CN: ldap.example.org}
    subject_alt_names: [DNS:ldap.example.org, IP:192.0.2.10]
    profile: service
    owner: openldap

- name: A user's Dask credential
  onprem.daskhpc.certificate:
    ca_dir: /etc/daskhpc/ca
    ca_passphrase: "{{ daskhpc_ca_passphrase }}"
    path: /home/alice/.daskhpc/tls/user.pem
    subject: {CN: alice}
    profile: user
    days: 7
    renew_before_days: 2
    owner: alice
    create_dirs: true
"""

RETURN = r"""
serial:
  description: Serial of the certificate in place (upper-case hex, as C(openssl x509 -serial) prints it).
  returned: success, not in check mode when a certificate is to be issued
  type: str
  sample: 4A6AA2C9DEA64E5860118EB4F9D1D75E283CB752
not_after:
  description: Expiry of the certificate in place (UTC).
  returned: success
  type: str
  sample: "2026-02-21T20:23:53Z"
reasons:
  description: Why the certificate was (or would be) issued; empty when it was kept.
  returned: always
  type: list
  elements: str
  sample: [no certificate]
path:
  description: Certificate path.
  returned: always
  type: str
privatekey_path:
  description: Key path (the key itself is never returned).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import pki_argument_spec

ITEM_OPTIONS = ("path", "privatekey_path", "subject", "subject_alt_names", "profile", "key_type", "days",
                "renew_before_days", "rotate_key", "force", "owner", "group", "mode", "privatekey_mode",
                "create_dirs", "dir_mode", "backup", "home", "public_key")


def to_request(params):
    """Module options to a pki request (key_mode is the library's name for privatekey_mode)."""
    req = {k: params.get(k) for k in ITEM_OPTIONS if params.get(k) is not None}
    if "privatekey_mode" in req:
        req["key_mode"] = req.pop("privatekey_mode")
    return req


def main():
    module = AnsibleModule(
        argument_spec={
            **pki_argument_spec(),
            "path": {"type": "path", "required": True},
            "privatekey_path": {"type": "path"},
            "subject": {"type": "dict", "required": True},
            "subject_alt_names": {"type": "list", "elements": "str", "default": []},
            "profile": {"type": "str", "default": "host", "choices": list(pki.PROFILES)},
            "key_type": {"type": "str", "default": "ecdsa-p256", "choices": list(pki.KEY_TYPES)},
            "days": {"type": "int", "default": 90},
            "renew_before_days": {"type": "int", "default": 30},
            "rotate_key": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
            "owner": {"type": "str"},
            "group": {"type": "str"},
            "mode": {"type": "raw", "default": "0644"},
            "privatekey_mode": {"type": "raw", "default": "0600", "no_log": False},
            "create_dirs": {"type": "bool", "default": False},
            "dir_mode": {"type": "raw", "default": "0700"},
            "backup": {"type": "bool", "default": False},
            "home": {"type": "path"},
            "public_key": {"type": "str"},
        },
        supports_check_mode=True,
    )
    if not pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography >= 42"), exception=pki.CRYPTOGRAPHY_IMPORT_ERROR)
    p = module.params
    try:
        results, _records = pki.ensure_certificates(
            p["ca_dir"], p["ca_passphrase"], [to_request(p)], check_mode=module.check_mode,
            requested_by=p["requested_by"], warn=module.warn)
    except pki.PkiError as exc:
        module.fail_json(msg=str(exc), problem=exc.problem, fix=exc.fix)
    item = results[0]
    if item.get("refused"):
        module.fail_json(msg="refused to write %s: %s" % (item["path"], item["refused"]), refused=item["refused"],
                         fix="remove the symlink or foreign file, or give the directory back to its owner")
    result = {
        "changed": item["changed"],
        "reasons": item["reasons"],
        "path": item["path"],
        "privatekey_path": item["privatekey_path"],
        "serial": item["after"].get("serial"),
        "not_after": item["after"].get("not_after"),
    }
    if module._diff:
        result["diff"] = {"before": item["before"], "after": item["after"]}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
