# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that render the validated site model (the fact daskhpc_model) into SLURM's vocabulary.

The views themselves live in module_utils/_core/site_model.py.
"""

from __future__ import annotations

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import site_model
from ansible_collections.onprem.daskhpc.plugins.plugin_utils.model import model_of, view


def daskhpc_model(site):
    """The validated model of a raw site model, in its published (plain) form."""
    model = model_of(site)
    return model.as_dict() if isinstance(model, site_model.SiteModel) else model


def slurm_nodes(model):
    return view(site_model.slurm_nodes, model)


def slurm_partitions(model):
    return view(site_model.slurm_partitions, model)


def slurm_qos_args(model):
    """The burst QOS in onprem.daskhpc.slurm_qos's own option names."""
    return view(site_model.qos_args, model)


def slurm_burst_account_args(model):
    """The burst account in onprem.daskhpc.slurm_account's own option names."""
    return view(site_model.burst_account_args, model)


def slurm_line(fields):
    """One slurm.conf line from an ordered mapping: `Key=value Key=value`."""
    return " ".join("%s=%s" % (key, value) for key, value in fields.items())


class FilterModule:
    def filters(self):
        return {
            "daskhpc_model": daskhpc_model,
            "slurm_nodes": slurm_nodes,
            "slurm_partitions": slurm_partitions,
            "slurm_qos_args": slurm_qos_args,
            "slurm_burst_account_args": slurm_burst_account_args,
            "slurm_line": slurm_line,
        }
