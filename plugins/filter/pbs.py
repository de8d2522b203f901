# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that render the site model into PBS queue, server and scheduler attributes.

The derivation lives in module_utils/pbs.py (pure Python, unit-tested); these only validate and call it.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils import pbs, site_model


def _model(site):
    try:
        model = site_model.validate(site)
    except site_model.SiteModelError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    if model["scheduler"] != "pbs":
        raise AnsibleFilterError("daskhpc_site.scheduler is %r, not pbs. Fix: set scheduler: pbs to build a "
                                 "PBS site, or do not run the pbs role" % model["scheduler"])
    return model


def _call(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except pbs.PbsError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def pbs_queues(site):
    """[{name, attributes}] for onprem.daskhpc.pbs_queue, one per partition."""
    return _call(pbs.pbs_queues, _model(site))


def pbs_server_attributes(site):
    return _call(pbs.pbs_server_attributes, _model(site))


def pbs_sched_attributes(site, preempt_order="RD", preempt_sort="min_time_since_start"):
    return _call(pbs.pbs_sched_attributes, _model(site), preempt_order, preempt_sort)


class FilterModule:
    def filters(self):
        return {
            "pbs_queues": pbs_queues,
            "pbs_server_attributes": pbs_server_attributes,
            "pbs_sched_attributes": pbs_sched_attributes,
        }
