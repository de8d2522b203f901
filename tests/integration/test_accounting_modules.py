"""slurm_qos against the real slurmdbd (run on ctl): check mode, diff mode, idempotence, removal."""

from __future__ import annotations

import pytest

from conftest import REPO, run_playbook, sh

pytestmark = pytest.mark.lab
PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "qos_module.yml"


def qos_row():
    return sh("sacctmgr", "--parsable2", "--noheader", "show", "qos", "name=daskhpc-it",
              "format=name,maxtrespu,maxjobspu,maxwall,flags").stdout.strip()


def test_slurm_qos_check_diff_idempotence_and_removal(lab):
    run_playbook(PLAYBOOK, extra_vars={"qos_state": "absent"})
    try:
        check = run_playbook(PLAYBOOK, "--check", "--diff")
        assert check.rc == 0 and check.changed == 1, check.output
        assert qos_row() == "", "check mode created the QOS"

        create = run_playbook(PLAYBOOK)
        assert create.rc == 0 and create.changed == 1, create.output
        assert qos_row() == "daskhpc-it|cpu=4|3|01:00:00|DenyOnLimit"

        again = run_playbook(PLAYBOOK)
        assert again.rc == 0 and again.changed == 0, again.output

        widen = run_playbook(PLAYBOOK, "--diff", extra_vars={"qos_max_cores": 6})
        assert widen.rc == 0 and widen.changed == 1, widen.output
        diff_lines = [line.replace(" ", "") for line in widen.output.splitlines()]
        assert "-max_tres_per_user:cpu=4" in diff_lines and "+max_tres_per_user:cpu=6" in diff_lines
        assert not any(line.startswith("+flags") for line in diff_lines), "unchanged fields shown as changed"
        assert qos_row().split("|")[1] == "cpu=6"
    finally:
        removed = run_playbook(PLAYBOOK, extra_vars={"qos_state": "absent"})
    assert removed.rc == 0 and qos_row() == ""
