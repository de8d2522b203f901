"""Helpers shared by the identity and access tests (real slapd, real nslcd, real Slurm)."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import yaml
from conftest import LabLock, run_playbook

REPO = Path(__file__).resolve().parents[2]
SECRETS = REPO / "inventories" / "lab" / "group_vars" / "all" / "lab_secrets.yml"
SITE = REPO / "inventories" / "lab" / "group_vars" / "all" / "site.yml"


CA_FILE = "/etc/daskhpc/tls/ca.pem"  # the site CA, deployed by playbooks/pki.yml


def ca_file():
    return CA_FILE


def ldap_settings():
    with open(SITE) as fh:
        return yaml.safe_load(fh)["daskhpc_site"]["ldap"]


def secrets():
    with open(SECRETS) as fh:
        return yaml.safe_load(fh)


def play(playbook, *args, extra_vars=None):
    """Run a playbook of the project under the lab lock."""
    with LabLock():
        return run_playbook(playbook, *args, extra_vars=extra_vars)


def write_play(tmp_path, tasks, name="play.yml"):
    """A one-play playbook on localhost from a list of task dicts."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump([{"name": "test", "hosts": "localhost", "gather_facts": False,
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


def sh(*argv, check=False):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def slapd(action):
    """Start or stop slapd through its init script (the lab has no systemd)."""
    return sh("/etc/init.d/slapd", action)


def wait_for_directory(seconds=30):
    """Until the reader can bind over StartTLS (slapd just (re)started)."""
    from ansible_collections.onprem.daskhpc.plugins.module_utils import ldap as L

    ldap = ldap_settings()
    deadline = time.monotonic() + seconds
    while True:
        try:
            L.connect(ldap["uri"], ldap["bind_dn"], secrets()["daskhpc_ldap_reader_password"],
                      start_tls=ldap["start_tls"], ca_file=ca_file()).unbind()
            return
        except L.LdapError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
