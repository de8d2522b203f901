#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slurm_cluster
short_description: Register a cluster in SLURM accounting
version_added: 0.1.0
description:
  - Adds or removes a cluster record in slurmdbd through C(sacctmgr), reading state with
    C(--parsable2 --noheader) only.
extends_documentation_fragment:
  - onprem.daskhpc.sacctmgr
  - onprem.daskhpc.command
attributes:
  check_mode:
    support: full
    description: Reports what would change without changing anything.
  diff_mode:
    support: full
    description: Shows whether the cluster was registered before and after.
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Register the cluster
  onprem.daskhpc.slurm_cluster:
    name: lab
"""

RETURN = r"""
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
    ensure,
    run_or_fail,
)


def main():
    module = AnsibleModule(
        argument_spec={**sacctmgr_argument_spec(), **command_argument_spec()},
        supports_check_mode=True,
    )
    result = run_or_fail(module, "cluster", lambda: ensure(module, "cluster", {}, key_field="cluster"))
    result.pop("state")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
