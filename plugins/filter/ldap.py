# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the directory roles: the site model's LDAP view and salted password hashes."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as ldapu
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import site_model
from ansible_collections.onprem.daskhpc.plugins.plugin_utils.model import view


def ldap_model(model):
    """The model's ``ldap`` section with defaults filled in (e.g. group_schema)."""
    return view(site_model.ldap_settings, model)


def ldap_allowed_groups(model, partition_class=None):
    """Sorted union of the groups allowed on the partitions of *partition_class* (all when None)."""
    return view(site_model.allowed_groups, model, partition_class)


def ldap_burst_groups(model):
    """Who may burst (site_model.burst_groups)."""
    return view(site_model.burst_groups, model)


def ldap_leaver_caches(model):
    """sssd's cache timeouts and slurmctld's GroupUpdateTime that keep a leaver within ldap.cache_seconds."""
    return view(site_model.leaver_caches, model)


def ldap_ssha(password, existing=None):
    """A ``{SSHA}`` hash of *password*; reuses the hash found in *existing* when it still matches.

    *existing* may be a hash or a slapd.conf text (its ``rootpw`` line is used),
    so templating a salted hash stays idempotent.
    """
    if password is None or password == "":
        raise AnsibleFilterError("ldap_ssha: the password is empty. Fix: set it in the inventory's vault")
    stored = None
    if existing:
        text = str(existing)
        found = re.search(r"^rootpw\s+(\S+)\s*$", text, re.MULTILINE)
        stored = found.group(1) if found else text.strip()
    return ldapu.reuse_or_hash(str(password), stored)


class FilterModule:
    def filters(self):
        return {
            "ldap_model": ldap_model,
            "ldap_allowed_groups": ldap_allowed_groups,
            "ldap_burst_groups": ldap_burst_groups,
            "ldap_ssha": ldap_ssha,
            "ldap_leaver_caches": ldap_leaver_caches,
        }
