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
options:
  site:
    description: The site model, normally C({{ daskhpc_site }}).
    type: dict
    required: true
attributes:
  check_mode:
    support: full
    description: Validation never changes anything.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
author:
  - onprem.daskhpc contributors
"""

EXAMPLES = r"""
- name: Validate the site model
  onprem.daskhpc.site_validate:
    site: "{{ daskhpc_site }}"
  delegate_to: localhost
  run_once: true
  register: daskhpc_validated
"""

RETURN = r"""
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
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.onprem.daskhpc.plugins.module_utils.site_model import SiteModelError, validate


def main():
    module = AnsibleModule(argument_spec={"site": {"type": "dict", "required": True}}, supports_check_mode=True)
    try:
        model = validate(module.params["site"])
    except SiteModelError as exc:
        module.fail_json(msg=str(exc), errors=exc.errors)
    module.exit_json(
        changed=False,
        model=model,
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
