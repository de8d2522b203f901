"""The PKI modules on a Python without ``cryptography``: they still load (so Ansible can read their argument
specs) and fail with missing_required_lib's message instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Runs a module as Ansible would (argument file as argv[1]) with every import of cryptography refused.
WITHOUT_CRYPTOGRAPHY = """
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError("No module named %r" % name)
sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

ARGS = {
    "ca": {"ca_dir": "/nonexistent/ca", "name": "unit CA", "passphrase": "correct horse battery staple"},
    "certificate": {"ca_dir": "/nonexistent/ca", "ca_passphrase": "correct horse battery staple",
                    "path": "/nonexistent/host.pem", "subject": {"CN": "host1"}},
    "certificate_batch": {"ca_dir": "/nonexistent/ca", "ca_passphrase": "correct horse battery staple",
                          "certificates": []},
    "crl": {"ca_dir": "/nonexistent/ca", "ca_passphrase": "correct horse battery staple"},
}


@pytest.mark.parametrize("module", sorted(ARGS))
def test_module_fails_cleanly_without_cryptography(module, tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": ARGS[module]}))
    env = dict(os.environ, PYTHONPATH=str(REPO / ".collections"))
    path = REPO / "plugins" / "modules" / (module + ".py")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_CRYPTOGRAPHY, str(path), str(args)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and result["failed"], proc.stdout + proc.stderr
    assert result["msg"].startswith("Failed to import the required Python library (cryptography >= 42)"), result


def test_pki_loads_without_cryptography():
    code = WITHOUT_CRYPTOGRAPHY.split("sys.argv", maxsplit=1)[0] + (
        "from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki\n"
        "print(pki.HAS_CRYPTOGRAPHY, len(pki.REVOCATION_REASONS), pki.KEY_TYPES[0])\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO / ".collections")),
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.split() == ["False", "8", "ecdsa-p256"]
