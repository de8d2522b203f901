#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pbs_queue
short_description: Manage an OpenPBS queue declaratively through qmgr
version_added: 0.1.0
description:
  - Creates, updates or deletes one OpenPBS (or PBS Professional) queue.
  - Reads the current state with C(qmgr -c 'print server') (qmgr's own input syntax, custom resources
    included), compares value by value (sizes in bytes, times in seconds, ACLs as sets, entity limits
    entry by entry) and runs one C(qmgr -c 'set queue ...') per attribute that differs.
  - Attribute names are checked against the queue attributes of pbs_queue_attributes(7B) and resource
    names against the built-in resources plus the site's own (C(create resource)); unknown names and
    bad values fail before anything changes.
  - Attributes not listed are left alone unless O(purge=true).
extends_documentation_fragment:
  - onprem.daskhpc.qmgr
  - onprem.daskhpc.command
options:
  name:
    description: Queue name (at most 15 characters, a letter first).
    type: str
    required: true
  state:
    description: Whether the queue should exist. Deleting a queue that still holds jobs fails.
    type: str
    choices: [present, absent]
    default: present
  attributes:
    description:
      - Queue attributes as qmgr names them, e.g. C(Priority), C(acl_groups), C(resources_max.walltime),
        C(max_run_res.ncpus).
      - Lists (C(acl_groups)) and entity limits (C(max_run), C(max_run_res.ncpus), e.g.
        C([u:PBS_GENERIC=16]) per user or C([o:PBS_ALL=256]) overall) are given as YAML lists.
      - C(queue_type) is required to create a queue. C(enabled) and C(started) are set last, after ACLs
        and limits.
    type: dict
    default: {}
  purge:
    description: Unset the attributes the queue has that O(attributes) does not list.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads the state and reports the qmgr commands it would run, without running them.
  diff_mode:
    support: full
    description: Shows the queue's attributes before and after.
notes:
  - Runs on a host where qmgr can reach pbs_server as a PBS manager (usually the server host as root).
  - Read-only attributes (C(total_jobs), C(state_count), C(resources_assigned)) are not managed.
seealso:
  - module: onprem.daskhpc.pbs_server
  - module: onprem.daskhpc.pbs_sched
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Burst queue, preemptible, capped per user and overall
  onprem.daskhpc.pbs_queue:
    name: burst
    attributes:
      queue_type: Execution
      Priority: 1
      acl_group_enable: true
      acl_groups: [datasci]
      resources_max.walltime: "04:00:00"
      resources_default.preempt_targets: NONE
      max_run: ["[u:PBS_GENERIC=32]"]
      max_run_res.ncpus: ["[o:PBS_ALL=256]", "[u:PBS_GENERIC=16]"]
      kill_delay: 60
      enabled: true
      started: true

- name: Queues derived from the site model
  onprem.daskhpc.pbs_queue:
    name: "{{ item.name }}"
    attributes: "{{ item.attributes }}"
  loop: "{{ daskhpc_model | onprem.daskhpc.pbs_queues }}"

- name: Remove an old queue
  onprem.daskhpc.pbs_queue:
    name: oldq
    state: absent
"""

RETURN = r"""
commands:
  description: The qmgr directives run, one C(qmgr -c) each (or that would run in check mode).
  returned: always
  type: list
  elements: str
  sample: ["set queue burst Priority = 1", "set queue burst max_run_res.ncpus = \"[o:PBS_ALL=256],[u:PBS_GENERIC=64]\""]
changes:
  description: One entry per attribute changed, with its value before and after (null when unset).
  returned: always
  type: list
  elements: dict
  sample: [{attribute: Priority, before: ["100"], after: ["1"]}]
queue:
  description: The queue's attributes after the change, as qmgr prints them.
  returned: success
  type: dict
  sample: {queue_type: Execution, Priority: "1", acl_groups: datasci}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import command_argument_spec, qmgr_argument_spec
from ansible_collections.onprem.daskhpc.plugins.module_utils._core.pbs import (
    PbsError,
    ensure_queue,
    module_qmgr,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "attributes": {"type": "dict", "default": {}},
            "purge": {"type": "bool", "default": False},
            **qmgr_argument_spec(),
            **command_argument_spec(),
        },
        supports_check_mode=True,
    )
    p = module.params
    qmgr = module_qmgr(module)
    try:
        result = ensure_queue(qmgr, p["name"], p["attributes"], state=p["state"], purge=p["purge"],
                              check_mode=module.check_mode)
    except PbsError as exc:
        module.fail_json(msg="pbs_queue %s: %s" % (p["name"], exc))
    module.exit_json(queue=result["diff"]["after"], **result)


if __name__ == "__main__":
    main()
