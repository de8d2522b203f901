#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slurm_user
short_description: Manage a SLURM user record, its default account and its admin level
version_added: 0.2.0
description:
  - Creates, updates or removes one user in SLURM's accounting database through C(sacctmgr).
  - Meant for service accounts such as the metrics exporter, which needs C(admin_level=operator) to
    see every job when C(PrivateData) hides other users' jobs. Data scientists' associations come
    from the directory; see M(onprem.daskhpc.slurm_ldap_sync).
extends_documentation_fragment:
  - onprem.daskhpc.sacctmgr
  - onprem.daskhpc.command
options:
  default_account:
    description:
      - The user's default account. A new user is added to this account (its association there).
      - Required when the user does not exist yet.
    type: str
  admin_level:
    description: SLURM admin level.
    type: str
    choices: [none, operator, administrator]
attributes:
  check_mode:
    support: full
    description: Reports what would change without running any changing sacctmgr command.
  diff_mode:
    support: full
    description: Shows the user's fields before and after.
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: The exporter sees every job although PrivateData hides them from users
  onprem.daskhpc.slurm_user:
    name: daskhpc-exporter
    default_account: production
    admin_level: operator
"""

RETURN = r"""
user:
  description: The user's fields after the change, keyed by option name.
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
    ensure_user,
    run_or_fail,
)


def main():
    module = AnsibleModule(
        argument_spec={
            **sacctmgr_argument_spec(),
            **command_argument_spec(),
            "default_account": {"type": "str"},
            "admin_level": {"type": "str", "choices": ["none", "operator", "administrator"]},
        },
        required_if=[("state", "present", ("default_account",))],
        supports_check_mode=True,
    )
    result = run_or_fail(module, "user", lambda: ensure_user(module))
    module.exit_json(user=result.pop("state"), **result)


if __name__ == "__main__":
    main()
