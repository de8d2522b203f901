# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Password hashes for web endpoints that take basic auth (Prometheus's web configuration)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    import bcrypt
except ImportError:  # reported when the filter is used, not when Ansible loads the plugin
    bcrypt = None


def bcrypt_hash(password, current=None):
    """A bcrypt hash of ``password``; ``current`` itself when it already matches it, so a re-run changes
    nothing (a new hash has a new salt every time)."""
    if bcrypt is None:
        raise AnsibleFilterError("bcrypt_hash needs the Python package bcrypt on the controller. Fix: "
                                 "pip install bcrypt (requirements.txt lists it)")
    if not password:
        raise AnsibleFilterError("bcrypt_hash: the password is empty. Fix: set it (in ansible-vault on a real site)")
    secret = str(password).encode()
    if current:
        try:
            if bcrypt.checkpw(secret, str(current).encode()):
                return str(current)
        except ValueError:
            pass  # not a bcrypt hash: make one
    return bcrypt.hashpw(secret, bcrypt.gensalt()).decode()


class FilterModule:
    def filters(self):
        return {"bcrypt_hash": bcrypt_hash}
