#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slurm_account
short_description: Manage a SLURM account and the QOS it may use
version_added: 0.1.0
description:
  - Creates, updates or removes one account in SLURM's accounting database through C(sacctmgr),
    including its account-level association (parent, allowed QOS, default QOS).
  - Reads state with C(--parsable2 --noheader) and explicit fields; changes only what differs.
  - User associations are not managed here; see M(onprem.daskhpc.slurm_ldap_sync).
extends_documentation_fragment:
  - onprem.daskhpc.sacctmgr
  - onprem.daskhpc.command
options:
  cluster:
    description: Cluster whose association is managed; all clusters when unset.
    type: str
  description:
    description: Free-text description.
    type: str
  organization:
    description: Organisation the account belongs to.
    type: str
  parent:
    description: Parent account.
    type: str
  qos:
    description: QOS the account's jobs may use.
    type: list
    elements: str
  default_qos:
    description: QOS used when a job names none.
    type: str
attributes:
  check_mode:
    support: full
    description: Reports what would change without running any changing sacctmgr command.
  diff_mode:
    support: full
    description: Shows the account's fields before and after.
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: The burst account, limited to the burst QOS
  onprem.daskhpc.slurm_account:
    name: burst
    cluster: lab
    description: Preemptible burst work
    organization: daskhpc
    qos: [burst]
    default_qos: burst
"""

RETURN = r"""
account:
  description: The account's fields after the change, keyed by option name.
  returned: success and state is present
  type: dict
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
    ensure_account,
    run_or_fail,
)


def main():
    module = AnsibleModule(
        argument_spec={
            **sacctmgr_argument_spec(),
            **command_argument_spec(),
            "cluster": {"type": "str"},
            "description": {"type": "str"},
            "organization": {"type": "str"},
            "parent": {"type": "str"},
            "qos": {"type": "list", "elements": "str"},
            "default_qos": {"type": "str"},
        },
        supports_check_mode=True,
    )
    result = run_or_fail(module, "account", lambda: ensure_account(module))
    module.exit_json(account=result.pop("state"), **result)


if __name__ == "__main__":
    main()
