# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the PKI roles: the model's CA settings and certificate requests built in Python.

Building thousands of certificate requests in Jinja loops is slow; these filters do it in one pass.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils import account_names
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import site_model
from ansible_collections.onprem.daskhpc.plugins.plugin_utils.model import view


def pki_ca(model):
    """The validated ``ca`` section: name, dir, key_type, host_cert_days, user_cert_days, renew_before_days."""
    return view(site_model.ca_settings, model)


def pki_burst_groups(model):
    """Who may burst (site_model.burst_groups): their members get Dask credentials."""
    return view(site_model.burst_groups, model)


def _min_uid(min_uid):
    try:
        min_uid = int(min_uid)
        account_names.check_settings(min_uid)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError("%s. Fix: leave user_credentials_min_uid at 1000 or more" % exc) from None
    return min_uid


def pki_account_names(users, min_uid=account_names.MIN_UID):
    """``{"accepted": [...], "refused": [{"name", "reason"}]}`` for names from the directory, checked
    before they reach getent, a path or a certificate (module_utils/account_names.py). The uid is
    checked later, on the CA host (pki_user_requests), where getent knows it."""
    accepted, refused = account_names.split(users, min_uid=_min_uid(min_uid), lookup=False)
    return {"accepted": accepted, "refused": refused}


def _accounts(getent_results, min_uid):
    """(name, passwd fields, refusal) for each user a looped getent found."""
    for result in getent_results:
        entry = (result.get("ansible_facts") or {}).get("getent_passwd") or {}
        name = result.get("item")
        fields = entry.get(name)
        if fields:
            yield name, fields, account_names.refusal(name, fields[1], min_uid=_min_uid(min_uid), lookup=False)


def pki_user_requests(getent_results, tls_subdir=".daskhpc/tls", min_uid=account_names.MIN_UID):
    """certificate_batch items from a looped ``ansible.builtin.getent`` (database passwd, one user per item).

    Users getent did not find are left out (the role reports them), and so are refused ones
    (pki_refused_users). Each item names the user's home, so the CA writes only inside it, through
    directories the user owns (safepath.py).
    """
    items = []
    for uid_name, fields, refused in _accounts(getent_results, min_uid):
        if refused:
            continue
        _password, uid, gid, _gecos, home = fields[:5]
        directory = os.path.join(home, tls_subdir)
        items.append({
            "path": os.path.join(directory, "user.pem"),
            "privatekey_path": os.path.join(directory, "user.key"),
            "subject": {"CN": uid_name},
            "owner": str(uid),
            "group": str(gid),
            "home": home,
        })
    return items


def pki_refused_users(getent_results, min_uid=account_names.MIN_UID):
    """``[{"name", "reason"}]`` for users getent found but pki_user_requests leaves out (system uids)."""
    return [{"name": name, "reason": refused} for name, _fields, refused in _accounts(getent_results, min_uid)
            if refused]


def pki_missing_users(getent_results):
    """Users a looped getent did not find."""
    return [r.get("item") for r in getent_results
            if not ((r.get("ansible_facts") or {}).get("getent_passwd") or {}).get(r.get("item"))]


def pki_staging_requests(certs, staging_dir, host_sans, public_keys=None):
    """certificate_batch items for a host's certificates, issued into the CA host's staging directory.

    Subject CN is the host's first SAN; service certificates add their own SANs to the host's.
    ``public_keys`` maps a certificate's name to the PEM public key of the key made on the host
    itself: the CA signs it and no private key is made or staged on the CA host.
    """
    public_keys = dict(public_keys or {})
    host_sans = list(host_sans or [])
    if not host_sans:
        raise AnsibleFilterError("pki_client_host_sans is empty. Fix: give at least the host's name")
    items = []
    for cert in certs:
        if not cert.get("name"):
            raise AnsibleFilterError("a pki_client_service_certs entry has no name. Fix: give name, e.g. slapd")
        sans = host_sans + [s for s in cert.get("subject_alt_names", []) if s not in host_sans]
        items.append({
            "path": os.path.join(staging_dir, cert["name"] + ".pem"),
            "privatekey_path": os.path.join(staging_dir, cert["name"] + ".key"),
            "subject": {"CN": host_sans[0]},
            "subject_alt_names": sans,
            "profile": cert.get("profile", "service"),
        })
        if cert["name"] in public_keys:
            items[-1]["public_key"] = public_keys[cert["name"]]
    return items


class FilterModule:
    def filters(self):
        return {
            "pki_ca": pki_ca,
            "pki_burst_groups": pki_burst_groups,
            "pki_account_names": pki_account_names,
            "pki_user_requests": pki_user_requests,
            "pki_refused_users": pki_refused_users,
            "pki_missing_users": pki_missing_users,
            "pki_staging_requests": pki_staging_requests,
        }
