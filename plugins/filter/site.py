# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that render the site model into SLURM's vocabulary; the logic lives in module_utils."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils import site_model


def _model(site):
    try:
        return site_model.validate(site)
    except site_model.SiteModelError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def daskhpc_model(site):
    return _model(site)


def slurm_nodes(site):
    return site_model.slurm_nodes(_model(site))


def slurm_partitions(site):
    return site_model.slurm_partitions(_model(site))


def slurm_burst_qos(site):
    return site_model.burst_qos(_model(site))


def slurm_line(fields):
    """One slurm.conf line from an ordered mapping: `Key=value Key=value`."""
    return " ".join("%s=%s" % (key, value) for key, value in fields.items())


class FilterModule:
    def filters(self):
        return {
            "daskhpc_model": daskhpc_model,
            "slurm_nodes": slurm_nodes,
            "slurm_partitions": slurm_partitions,
            "slurm_burst_qos": slurm_burst_qos,
            "slurm_line": slurm_line,
        }
