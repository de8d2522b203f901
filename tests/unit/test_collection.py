"""The collection builds, and every module documents itself."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def run(*argv):
    env = {"PATH": "%s:/usr/bin:/bin" % BIN, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "PYTHONPATH": str(REPO / ".collections"), "HOME": "/root"}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_collection_builds_without_local_state(tmp_path):
    proc = run(str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (artifact,) = tmp_path.glob("onprem-daskhpc-*.tar.gz")
    names = tarfile.open(artifact).getnames()
    assert "plugins/modules/slurm_qos.py" in names
    assert "roles/slurm/templates/slurm.conf.j2" in names
    assert not [n for n in names if n.startswith((".venv", ".collections", ".ansible/")) or "__pycache__" in n]


@pytest.mark.parametrize("module", MODULES)
def test_module_documentation_parses(module):
    proc = run(str(BIN / "ansible-doc"), "-t", "module", "--json", "onprem.daskhpc.%s" % module)
    assert proc.returncode == 0, proc.stderr
    assert '"attributes"' in proc.stdout and '"check_mode"' in proc.stdout, "module lacks check_mode attributes"


def test_the_example_sites_secrets_are_vault_encrypted_and_complete(tmp_path):
    """Every secret the example site names comes from vault.yml, which is encrypted (and decrypts with the
    example's documented password to a value for each)."""
    import re
    import subprocess

    import yaml

    directory = REPO / "inventories" / "example-site" / "group_vars" / "all"
    vault = directory / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    wanted = set(re.findall(r"\{\{ (vault_\w+) \}\}", (directory / "secrets.yml").read_text()))
    assert len(wanted) >= 5
    password = tmp_path / "pass"
    password.write_text("example-site-vault-password")
    plain = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-vault"), "view", "--vault-password-file",
                            str(password), str(vault)], capture_output=True, text=True, check=True).stdout
    values = yaml.safe_load(plain)
    assert wanted <= set(values) and all(len(str(values[k])) >= 16 for k in wanted)
    assert not any(str(values[k]) in (directory / "secrets.yml").read_text() for k in wanted)
