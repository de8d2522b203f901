"""Shared fixtures: run the project's own playbooks and talk to the lab's real daemons."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAB_INVENTORY = REPO / "inventories" / "lab"
LOCK_PATH = "/tmp/daskhpc-lab.lock"
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookRun:
    rc: int
    output: str
    recap: dict

    @property
    def changed(self):
        return sum(host["changed"] for host in self.recap.values())

    @property
    def failed(self):
        return sum(host["failed"] + host["unreachable"] for host in self.recap.values())


def ansible_env(**extra):
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update(
        PATH=venv_bin + os.pathsep + env.get("PATH", ""),
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PYTHONPATH=str(REPO / ".collections"),
    )
    env.update(extra)
    return env


def run_playbook(playbook, *args, inventory=LAB_INVENTORY, extra_vars=None, env=None, timeout=1800):
    """Run one of the project's playbooks (path relative to playbooks/ or absolute) and parse its recap."""
    path = Path(playbook)
    if not path.is_absolute():
        path = REPO / "playbooks" / playbook
    argv = ["ansible-playbook", "-i", str(inventory), str(path), *args]
    for key, value in (extra_vars or {}).items():
        argv += ["-e", "%s=%s" % (key, value)]
    proc = subprocess.run(argv, cwd=REPO, env=ansible_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout, check=False)
    output = proc.stdout + proc.stderr
    recap = {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
             for m in RECAP_RE.finditer(output)}
    return PlaybookRun(proc.returncode, output, recap)


class LabLock:
    """Serialises converges of the one shared lab between concurrent test sessions."""

    def __enter__(self):
        self._fh = open(LOCK_PATH, "w")  # noqa: SIM115
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


@pytest.fixture(scope="session")
def lab():
    """The lab, converged through playbooks/lab.yml (the same playbook `make lab` runs)."""
    with LabLock():
        run = run_playbook("lab.yml")
    assert run.rc == 0 and run.failed == 0, "lab converge failed:\n" + run.output[-6000:]
    return run


@pytest.fixture(scope="session")
def lab_site():
    """The lab's site model as written in the inventory."""
    with open(LAB_INVENTORY / "group_vars" / "all" / "site.yml") as fh:
        return yaml.safe_load(fh)["daskhpc_site"]


def sh(*argv, user=None, check=True, timeout=120, env=None, input=None):
    """Run a command, optionally as another (directory) user through runuser; return stdout."""
    if user is not None:
        argv = ("runuser", "-u", user, "--", *argv)
    # Another user's jobs must not inherit a working directory they cannot write (the checkout).
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, input=input,
                          check=False, cwd="/tmp" if user is not None else None)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (rc=%d):\n%s%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc
