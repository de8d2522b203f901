# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the data scientists' Dask configuration (/etc/dask/daskhpc.yaml) from the site model."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils import site_model


def dask_client_config(site, tls=None, contact=None, extra=None):
    """The whole file's content: ``{"daskhpc": client_config(model) + node limits + tls paths + contact}``.

    ``tls``: mapping with ca, cert, key (the user's credential paths; ``~`` is expanded per user).
    The model's ``dask.tls`` mode moves under ``tls.mode`` so that ``daskhpc.tls.ca|cert|key`` are paths.
    """
    try:
        model = site_model.validate(site)
    except site_model.SiteModelError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    config = site_model.client_config(model)
    burst_nodes = set()
    for part in model["partitions"]:
        if part["name"] == config["partition"]:
            burst_nodes.update(part["nodes"])
    groups = [g for g in model["node_groups"] if burst_nodes & set(g["node_names"])]
    if groups:
        # A job runs on one node: the largest burst node bounds a job's cores and memory.
        config["limits"]["max-cores-per-job"] = max(g["cpus"] for g in groups)
        config["limits"]["max-memory-per-job"] = "%dMiB" % max(g["memory_mb"] for g in groups)
    config["tls"] = dict({"mode": config["tls"]}, **(tls or {}))
    if contact:
        config["contact"] = contact
    config.update(extra or {})
    return {"daskhpc": config}


def dask_client_venv(site):
    """The virtual environment that holds the model's ``dask.python`` (``.../venv/bin/python`` -> ``.../venv``)."""
    python = site_model.validate(site)["dask"]["python"]
    parts = python.rstrip("/").split("/")
    if len(parts) < 3 or parts[-2] != "bin":
        raise AnsibleFilterError("dask.python: %r is not a virtual environment's bin/python. Fix: give e.g. "
                                 "/opt/daskhpc/venv/bin/python" % python)
    return "/".join(parts[:-2])


class FilterModule:
    def filters(self):
        return {"dask_client_config": dask_client_config, "dask_client_venv": dask_client_venv}
