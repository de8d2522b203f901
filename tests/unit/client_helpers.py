"""Shared by the daskhpc client tests: the lab's site file in a temporary place, and a small site PKI.

The client reads its policy only from ``daskhpc.config.SITE_FILE`` (no environment variable can move
it), so tests point that module constant at a file they write, as the dask_client role would.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import sys
import time
from pathlib import Path

import pytest
import yaml

from daskhpc import config as site

REPO = Path(__file__).resolve().parents[2]
USER = pwd.getpwuid(os.geteuid()).pw_name
CA_PASSPHRASE = "unit test passphrase"


def lab_config(**overrides):
    """The daskhpc section exactly as the dask_client role writes it for the lab (TLS optional, no credential)."""
    from ansible_collections.onprem.daskhpc.plugins.filter.dask_client import dask_client_config

    with open(REPO / "inventories/lab/group_vars/all/site.yml") as handle:
        model = yaml.safe_load(handle)["daskhpc_site"]
    config = dask_client_config(model, tls={"ca": "/nonexistent/ca.pem", "cert": "/nonexistent/u.pem",
                                            "key": "/nonexistent/u.key"}, contact="hpc-help@lab.example")["daskhpc"]
    config["tls"]["mode"] = "optional"
    # The tests' own interpreter stands for the site's Python (BurstCluster checks any other against it).
    config["python"] = sys.executable
    # The model names the lab hosts' interface (host0); these clusters run on this machine.
    config["interface"] = "lo"
    config.update(overrides)
    return config


def write_site_file(path, config):
    """Write ``{"daskhpc": config}`` as the role does (mode 0644); return the path as a string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"daskhpc": config}))
    path.chmod(0o644)
    return str(path)


@contextlib.contextmanager
def site_file(directory, config, home=True):
    """Use ``config`` as the site file for the duration (owned by whoever runs the tests).

    With ``home``, HOME is ``directory/home`` too, so that ``~/.daskhpc/logs`` lands in the test's directory.
    """
    path = write_site_file(Path(directory) / "daskhpc.yaml", config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(site, "SITE_FILE", path)
        patch.setattr(site, "SITE_FILE_OWNER", os.geteuid())
        if home:
            (Path(directory) / "home").mkdir(exist_ok=True)
            patch.setenv("HOME", str(Path(directory) / "home"))
        yield path


def python_with_site_file(path):
    """argv prefix running Python with ``daskhpc.config.SITE_FILE`` pointed at ``path`` (for subprocesses)."""
    setup = ("import daskhpc.config as c; c.SITE_FILE = %r; c.SITE_FILE_OWNER = %d; import runpy, sys; "
             "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__')" % (str(path), os.geteuid()))
    return [sys.executable, "-c", setup]


def make_pki(directory, users=(USER,)):
    """A site CA (root + intermediate) made with the collection's own code, and a user credential per name.

    Returns {"ca": bundle, "crl": crl path, "ca_dir": ..., "serials": {user: serial}, user: {"cert", "key"}}.
    """
    from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki

    directory = Path(directory)
    ca_dir = str(directory / "ca")
    pki.ensure_ca(ca_dir, "unit CA", CA_PASSPHRASE)
    requests = [{"path": str(directory / user / "user.pem"), "subject": {"CN": user}, "profile": "user", "days": 7,
                 "create_dirs": True} for user in users]
    results, _records = pki.ensure_certificates(ca_dir, CA_PASSPHRASE, requests, defaults={"renew_before_days": 2})
    pki.ensure_crl(ca_dir, CA_PASSPHRASE)
    made = {"ca": os.path.join(ca_dir, "ca.pem"), "crl": os.path.join(ca_dir, "crl.pem"), "ca_dir": ca_dir,
            "serials": {}}
    for user, result in zip(users, results):
        made[user] = {"cert": str(directory / user / "user.pem"), "key": str(directory / user / "user.key")}
        made["serials"][user] = result["after"]["serial"]
    return made


def revoke(pki_paths, user):
    """Revoke ``user``'s credential and re-sign the CRL in place (what playbooks/pki.yml does)."""
    from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki

    pki.ensure_crl(pki_paths["ca_dir"], CA_PASSPHRASE,
                   revoke=[{"serial": pki_paths["serials"][user], "reason": "key_compromise"}])


def tls_section(pki_paths, user=USER, mode="required"):
    """The site file's ``tls`` mapping for ``user``'s credential in ``pki_paths``."""
    return {"mode": mode, "ca": pki_paths["ca"], "crl": pki_paths["crl"], "cert": pki_paths[user]["cert"],
            "key": pki_paths[user]["key"]}


def wait_for(predicate, timeout=60):
    """True as soon as predicate() is, False after `timeout` seconds (the caller asserts, with its message)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False
