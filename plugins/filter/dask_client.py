# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the data scientists' Dask configuration (/etc/dask/daskhpc.yaml) from the validated site model."""

from __future__ import annotations

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import site_model
from ansible_collections.onprem.daskhpc.plugins.plugin_utils.model import view


def dask_client_config(model, tls=None, contact=None, extra=None):
    """The whole file's content: ``{"daskhpc": site_model.client_config(model) + tls paths + contact}``.

    ``tls``: mapping with ca, cert, key (the user's credential paths; ``~`` is expanded per user).
    The model's ``dask.tls`` mode moves under ``tls.mode`` so that ``daskhpc.tls.ca|cert|key`` are paths.
    """
    config = view(site_model.client_config, model)
    config["tls"] = dict({"mode": config["tls"]}, **(tls or {}))
    if contact:
        config["contact"] = contact
    config.update(extra or {})
    return {"daskhpc": config}


def dask_client_venv(model):
    """The virtual environment that holds the model's ``dask.python`` (``.../venv/bin/python`` -> ``.../venv``)."""
    return view(site_model.python_venv, model)


class FilterModule:
    def filters(self):
        return {"dask_client_config": dask_client_config, "dask_client_venv": dask_client_venv}
