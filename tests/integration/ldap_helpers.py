"""Helpers shared by the identity and access tests (real slapd on svc, Samba AD DC on ad, sssd on every host, Slurm).

Directory writes run where the ldap_server role runs them (the inventory's ldap_server host),
directory reads where a client reads it (the login host), both through the collection's modules.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from conftest import adhoc, inventory_group, run_playbook, sh

REPO = Path(__file__).resolve().parents[2]
SECRETS = REPO / "inventories" / "lab" / "group_vars" / "all" / "lab_secrets.yml"
SITE = REPO / "inventories" / "lab" / "group_vars" / "all" / "site.yml"
AD_LDAP = REPO / "lab" / "ad_ldap.yml"  # the site model's ldap section for the lab's Active Directory

CA_FILE = "/etc/daskhpc/tls/ca.pem"  # the site CA bundle on every host, deployed by playbooks/pki.yml
DIRECTORY_HOSTS = "ldap_server"      # inventory group of the directory server (svc)
CLIENT_HOST = "login"                # a directory client: where users log in


def ca_file():
    return CA_FILE


def ldap_settings():
    with open(SITE) as fh:
        return yaml.safe_load(fh)["daskhpc_site"]["ldap"]


def secrets():
    with open(SECRETS) as fh:
        return yaml.safe_load(fh)


def play(playbook, *args, extra_vars=None):
    """Run a playbook of the project (the session's `lab` fixture holds the lab lock)."""
    return run_playbook(playbook, *args, extra_vars=extra_vars)


def write_play(tmp_path, tasks, name="play.yml", hosts=DIRECTORY_HOSTS):
    """A one-play playbook from a list of task dicts, on the directory server unless `hosts` says otherwise."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump([{"name": "test", "hosts": hosts, "gather_facts": False,
                                     "tasks": tasks}], sort_keys=False))
    return path


def admin_connection():
    """Module options binding as the directory administrator, as the ldap_server role does."""
    ldap = ldap_settings()
    return {
        "server_uri": ldap["uri"],
        "start_tls": ldap["start_tls"],
        "ca_file": ca_file(),
        "bind_dn": "cn=admin," + ldap["base_dn"],
        "bind_pw": "{{ daskhpc_ldap_admin_password }}",
    }


def reader_connection():
    """Module options binding as the nodes' read-only account (the literal password: no templating ad hoc)."""
    ldap = ldap_settings()
    return {
        "server_uri": ldap["uri"],
        "start_tls": ldap["start_tls"],
        "ca_file": ca_file(),
        "bind_dn": ldap["bind_dn"],
        "bind_pw": secrets()["daskhpc_ldap_reader_password"],
    }


def directory_read(lab_hosts, host=CLIENT_HOST, allow_failure=False, **options):
    """onprem.daskhpc.ldap_info on a directory client, bound as the reader: its result dict."""
    return adhoc(lab_hosts, host, "onprem.daskhpc.ldap_info", allow_failure=allow_failure,
                 **dict(reader_connection(), **options))[host]


def find_users(lab_hosts, names):
    """{uid: attributes} of the users that exist, as a client sees them."""
    return directory_read(lab_hosts, user_base=ldap_settings()["user_base"], users=list(names))["users"]


def resolve_groups(lab_hosts, names):
    """{group: [member uids]}, as a client sees them (fails the test if a group does not exist)."""
    return directory_read(lab_hosts, group_base=ldap_settings()["group_base"], groups=list(names))["groups"]


def slapd(action):
    """Start or stop slapd on the directory server (a systemd unit)."""
    return sh("systemctl", action, "slapd", host=directory_host(), check=False)


def directory_host():
    """The directory server's inventory name (svc)."""
    return inventory_group(DIRECTORY_HOSTS)[0]


def wait_for_directory(lab_hosts, seconds=60):
    """Until a client can bind as the reader over StartTLS (slapd just (re)started)."""
    deadline = time.monotonic() + seconds
    while True:
        result = directory_read(lab_hosts, allow_failure=True, base=ldap_settings()["base_dn"])
        if not result.get("failed"):
            return result
        if time.monotonic() > deadline:
            raise AssertionError("the directory did not come back within %ss: %s" % (seconds, result.get("msg")))
        time.sleep(1)


def ad_site_vars(tmp_path):
    """An extra-vars file (`-e @file`): the lab's site model with its directory switched to the AD DC."""
    with open(SITE) as fh:
        site = yaml.safe_load(fh)["daskhpc_site"]
    with open(AD_LDAP) as fh:
        site["ldap"] = yaml.safe_load(fh)
    path = tmp_path / "ad-site.json"
    path.write_text(json.dumps({"daskhpc_site": site}))
    return path


def ad_ldap():
    with open(AD_LDAP) as fh:
        return yaml.safe_load(fh)


def samba_tool(*argv):
    """samba-tool on the AD DC, on its local database (as the samba_ad_dc role runs it)."""
    return sh("samba-tool", *argv, "-H", "/var/lib/samba/private/sam.ldb", host=inventory_group("ad_server")[0])
