#!/usr/bin/python
# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: site_validate
short_description: Validate the daskhpc site model before anything is changed
version_added: 0.1.0
description:
  - Checks the site model (C(daskhpc_site)) against every invariant the collection relies on
    and returns the normalised model with its derived values.
  - Every problem is reported at once, each naming its field and how to fix it.
  - Run it first, on the controller, so a bad model stops the play before any host is touched.
  - Publishes the validated model as the fact C(daskhpc_model); roles, templates and filters read
    that fact instead of validating C(daskhpc_site) again (playbooks/validate.yml).
  - With O(compute_hosts), also checks that the inventory's compute hosts are exactly the model's nodes.
options:
  site:
    description: The site model, normally C({{ daskhpc_site }}).
    type: dict
    required: true
  compute_hosts:
    description:
      - The inventory's compute hosts, normally C({{ groups['compute'] }}).
      - Each model node needs a host of the same short name, and each host a node.
      - Not checked when left out.
    type: list
    elements: str
  lenient:
    description:
      - Never fail on a bad model; return the model as written (wrong types replaced by their defaults)
        in RV(model) and the problems in RV(errors), and publish no fact. For reports on an invalid site
        (playbooks/audit.yml), never for deploying.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Validation never changes anything.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
author:
  - onprem.daskhpc contributors (@onprem)
"""

EXAMPLES = r"""
- name: Validate the site model
  onprem.daskhpc.site_validate:
    site: "{{ daskhpc_site }}"
  delegate_to: localhost
  run_once: true
  register: daskhpc_validated

- name: Validate the site model and check it against the inventory's compute hosts
  onprem.daskhpc.site_validate:
    site: "{{ daskhpc_site }}"
    compute_hosts: "{{ groups['compute'] }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
ansible_facts:
  description: The fact C(daskhpc_model), the same as RV(model).
  returned: success
  type: dict
  contains:
    daskhpc_model:
      description: The validated model.
      type: dict
      returned: success
model:
  description: The normalised site model with derived fields (node names, burst core cap, tiers).
  returned: success
  type: dict
summary:
  description: Short figures about the site.
  returned: success
  type: dict
  sample: {partitions: 3, production: 2, burst: 1, total_cores: 48, burst_max_cores: 24}
errors:
  description: Every problem found, each naming its field and its fix.
  returned: failure, or always with O(lenient=true)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.onprem.daskhpc.plugins.module_utils._core.site_model import (
    SiteModelError,
    inventory_problems,
    validate,
)


def main():
    module = AnsibleModule(argument_spec={"site": {"type": "dict", "required": True},
                                          "compute_hosts": {"type": "list", "elements": "str"},
                                          "lenient": {"type": "bool", "default": False}},
                           supports_check_mode=True)
    if module.params["lenient"]:
        model, errors = validate(module.params["site"], lenient=True)
        module.exit_json(changed=False, model=model.as_dict(), errors=errors)
    try:
        model = validate(module.params["site"])
    except SiteModelError as exc:
        module.fail_json(msg=str(exc), errors=exc.errors)
    if module.params["compute_hosts"] is not None:
        errors = inventory_problems(model, module.params["compute_hosts"])
        if errors:
            module.fail_json(msg=str(SiteModelError(errors)), errors=errors)
    published = model.as_dict()
    module.exit_json(
        changed=False,
        ansible_facts={"daskhpc_model": published},
        model=published,
        summary={
            "partitions": len(model["partitions"]),
            "production": len(model["production_partitions"]),
            "burst": len(model["burst_partitions"]),
            "total_cores": model["total_cores"],
            "burst_max_cores": model["burst"]["max_cores"],
        },
    )


if __name__ == "__main__":
    main()
