#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slurm_qos
short_description: Manage a SLURM QOS and its limits declaratively
version_added: 0.1.0
description:
  - Creates, updates or removes one QOS in SLURM's accounting database through C(sacctmgr).
  - Reads the current state with C(--parsable2 --noheader) and an explicit field list, changes only the
    limits that differ, and never parses human-readable messages.
  - Options left unset are not managed.
extends_documentation_fragment:
  - onprem.daskhpc.sacctmgr
  - onprem.daskhpc.command
options:
  description:
    description: Free-text description.
    type: str
  priority:
    description: QOS priority (plays no part in preemption with preempt/partition_prio).
    type: int
  max_tres_per_user:
    description: Most TRES one user may hold at once, e.g. C(cpu=16). Empty string clears it.
    type: str
  max_jobs_per_user:
    description: Most running jobs per user; -1 clears it.
    type: int
  max_submit_jobs_per_user:
    description: Most queued plus running jobs per user; -1 clears it.
    type: int
  grp_tres:
    description: Cap for all jobs in the QOS together, e.g. C(cpu=24). Empty string clears it.
    type: str
  max_wall:
    description: Longest walltime, e.g. C(04:00:00). Empty string clears it.
    type: str
  flags:
    description: QOS flags, e.g. C(DenyOnLimit) so over-limit submissions are refused, not left pending.
    type: list
    elements: str
attributes:
  check_mode:
    support: full
    description: Reports what would change without running any changing sacctmgr command.
  diff_mode:
    support: full
    description: Shows the QOS fields before and after.
notes:
  - Needs a running slurmdbd; the module runs where C(sacctmgr) can reach it.
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Enforce the burst policy inside the scheduler
  onprem.daskhpc.slurm_qos:
    name: burst
    max_tres_per_user: cpu=16
    max_jobs_per_user: 32
    max_submit_jobs_per_user: 200
    grp_tres: cpu=24
    max_wall: "04:00:00"
    flags: [DenyOnLimit]

- name: The burst QOS built from the validated site model (roles/slurm_accounting does this)
  onprem.daskhpc.slurm_qos:
    name: "{{ qos.name }}"
    description: "{{ qos.description }}"
    max_tres_per_user: "{{ qos.max_tres_per_user }}"
    max_jobs_per_user: "{{ qos.max_jobs_per_user }}"
    max_submit_jobs_per_user: "{{ qos.max_submit_jobs_per_user }}"
    grp_tres: "{{ qos.grp_tres }}"
    max_wall: "{{ qos.max_wall }}"
    flags: "{{ qos.flags }}"
  vars:
    qos: "{{ daskhpc_model | onprem.daskhpc.slurm_qos_args }}"
"""

RETURN = r"""
qos:
  description: The QOS fields after the change, keyed by option name.
  returned: success and state is present
  type: dict
  sample: {max_tres_per_user: cpu=16, max_jobs_per_user: "32", grp_tres: cpu=24}
commands:
  description: The sacctmgr commands run (or that would run in check mode).
  returned: always
  type: list
  elements: list
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import (
    command_argument_spec,
    sacctmgr_argument_spec,
)
from ansible_collections.onprem.daskhpc.plugins.module_utils.slurm_accounting import (
    QOS_FIELDS,
    ensure,
    run_or_fail,
)


def main():
    module = AnsibleModule(
        argument_spec={
            **sacctmgr_argument_spec(),
            **command_argument_spec(),
            "description": {"type": "str"},
            "priority": {"type": "int"},
            "max_tres_per_user": {"type": "str"},
            "max_jobs_per_user": {"type": "int"},
            "max_submit_jobs_per_user": {"type": "int"},
            "grp_tres": {"type": "str"},
            "max_wall": {"type": "str"},
            "flags": {"type": "list", "elements": "str"},
        },
        supports_check_mode=True,
    )
    result = run_or_fail(module, "QOS", lambda: ensure(module, "qos", QOS_FIELDS))
    module.exit_json(qos=result.pop("state"), **result)


if __name__ == "__main__":
    main()
