#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pbs_sched
short_description: Manage OpenPBS scheduler attributes (preemption policy) through qmgr
version_added: 0.1.0
description:
  - Sets attributes of an OpenPBS scheduler object, in particular the preemption policy
    C(preempt_queue_prio), C(preempt_prio), C(preempt_order) and C(preempt_sort).
  - In OpenPBS these are scheduler attributes set with C(qmgr -c 'set sched ...') (pbs_ifl.h defines
    them as C(ATTR_sched_preempt_*)); older PBS Professional releases read them from the
    C(sched_config) file instead.
  - Reads the current state with C(qmgr -c 'print sched'), validates names and values
    (pbs_sched_attributes(7B)) and runs one C(qmgr -c 'set sched ...') per attribute that differs.
extends_documentation_fragment:
  - onprem.daskhpc.qmgr
  - onprem.daskhpc.command
options:
  name:
    description: Scheduler name; C(default) is the default scheduler.
    type: str
    default: default
  attributes:
    description: Scheduler attributes, e.g. C(preempt_order) C(RD) (requeue, delete if the job cannot be requeued).
    type: dict
    required: true
attributes:
  check_mode:
    support: full
    description: Reads the state and reports the qmgr commands it would run, without running them.
  diff_mode:
    support: full
    description: Shows the scheduler attributes before and after.
seealso:
  - module: onprem.daskhpc.pbs_queue
  - module: onprem.daskhpc.pbs_server
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Production (express queues) preempts normal jobs by requeueing them
  onprem.daskhpc.pbs_sched:
    attributes:
      preempt_queue_prio: 150
      preempt_prio: "express_queue, normal_jobs"
      preempt_order: RD
      preempt_sort: min_time_since_start
"""

RETURN = r"""
commands:
  description: The qmgr directives run (or that would run in check mode).
  returned: always
  type: list
  elements: str
  sample: ["set sched preempt_order = RD"]
changes:
  description: One entry per attribute changed, with its value before and after.
  returned: always
  type: list
  elements: dict
sched:
  description: The scheduler attributes after the change, as qmgr prints them.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.onprem.daskhpc.plugins.module_utils.argspec import command_argument_spec, qmgr_argument_spec
from ansible_collections.onprem.daskhpc.plugins.module_utils._core.pbs import (
    PbsError,
    ensure_sched,
    module_qmgr,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "default": "default"},
            "attributes": {"type": "dict", "required": True},
            **qmgr_argument_spec(),
            **command_argument_spec(),
        },
        supports_check_mode=True,
    )
    p = module.params
    qmgr = module_qmgr(module)
    try:
        result = ensure_sched(qmgr, p["attributes"], p["name"], check_mode=module.check_mode)
    except PbsError as exc:
        module.fail_json(msg="pbs_sched %s: %s" % (p["name"], exc))
    module.exit_json(sched=result["diff"]["after"], **result)


if __name__ == "__main__":
    main()
