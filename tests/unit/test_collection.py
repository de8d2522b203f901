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
