#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pbs_server
short_description: Manage OpenPBS server attributes declaratively through qmgr
version_added: 0.1.0
description:
  - Sets OpenPBS (or PBS Professional) server attributes such as C(default_queue), C(scheduling),
    C(managers) or C(resources_default.walltime).
  - Reads the current state with C(qmgr -c 'print server'), compares value by value and runs one
    C(qmgr -c 'set server ...') per attribute that differs.
  - Attribute names are checked against pbs_server_attributes(7B) and resource names against the
    built-in and site resources; unknown names and bad values fail before anything changes.
  - Only the attributes listed are managed; nothing is ever unset.
extends_documentation_fragment:
  - onprem.daskhpc.qmgr
  - onprem.daskhpc.command
options:
  attributes:
    description: Server attributes as qmgr names them; lists (C(managers), C(acl_roots)) as YAML lists.
    type: dict
    required: true
attributes:
  check_mode:
    support: full
    description: Reads the state and reports the qmgr commands it would run, without running them.
  diff_mode:
    support: full
    description: Shows the server attributes before and after.
notes:
  - Runs on a host where qmgr can reach pbs_server as a PBS manager.
seealso:
  - module: onprem.daskhpc.pbs_queue
  - module: onprem.daskhpc.pbs_sched
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Production is where jobs land by default
  onprem.daskhpc.pbs_server:
    attributes:
      default_queue: prod
      scheduling: true

- name: Server attributes from the site model
  onprem.daskhpc.pbs_server:
    attributes: "{{ daskhpc_model | onprem.daskhpc.pbs_server_attributes }}"
"""

RETURN = r"""
commands:
  description: The qmgr directives run (or that would run in check mode).
  returned: always
  type: list
  elements: str
  sample: ["set server default_queue = prod"]
changes:
  description: One entry per attribute changed, with its value before and after.
  returned: always
  type: list
  elements: dict
server:
  description: The server attributes after the change, as qmgr prints them.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import command_argument_spec, qmgr_argument_spec
from ansible_collections.onprem.daskhpc.plugins.module_utils._core.pbs import (
    PbsError,
    ensure_server,
    module_qmgr,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "attributes": {"type": "dict", "required": True},
            **qmgr_argument_spec(),
            **command_argument_spec(),
        },
        supports_check_mode=True,
    )
    p = module.params
    qmgr = module_qmgr(module)
    try:
        result = ensure_server(qmgr, p["attributes"], check_mode=module.check_mode)
    except PbsError as exc:
        module.fail_json(msg="pbs_server: %s" % exc)
    module.exit_json(server=result["diff"]["after"], **result)


if __name__ == "__main__":
    main()
