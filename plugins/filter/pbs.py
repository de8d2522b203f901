# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that render the site model into PBS queue, server and scheduler attributes.

The derivation lives in module_utils/_core/pbs.py (pure Python, unit-tested); these only validate and call it.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pbs
from ansible_collections.onprem.daskhpc.plugins.plugin_utils.model import model_of


def _call(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except pbs.PbsError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def pbs_queues(model):
    """[{name, attributes}] for onprem.daskhpc.pbs_queue, one per partition."""
    return _call(pbs.pbs_queues, model_of(model, scheduler="pbs"))


def pbs_server_attributes(model):
    return _call(pbs.pbs_server_attributes, model_of(model, scheduler="pbs"))


def pbs_sched_attributes(model, preempt_order="RD", preempt_sort="min_time_since_start"):
    return _call(pbs.pbs_sched_attributes, model_of(model, scheduler="pbs"), preempt_order, preempt_sort)


def pbs_nodes(model):
    """[{name, ncpus, mem}] per compute node of the model, for registering moms on the server."""
    model = model_of(model, scheduler="pbs")
    return [{"name": name, "ncpus": group["cpus"], "mem": "%dmb" % group["memory_mb"]}
            for group in model["node_groups"] for name in group["node_names"]]


class FilterModule:
    def filters(self):
        return {
            "pbs_queues": pbs_queues,
            "pbs_server_attributes": pbs_server_attributes,
            "pbs_sched_attributes": pbs_sched_attributes,
            "pbs_nodes": pbs_nodes,
        }
