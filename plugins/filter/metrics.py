# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that derive the exporter's and Prometheus's configuration from the validated site model."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils import site_model
from ansible_collections.onprem.daskhpc.plugins.plugin_utils.model import model_of, view

DOCUMENTATION_URL = "docs/observability.md"


def metrics_exporter_config(model, ledger_path=None, **settings):
    """The exporter's YAML configuration (site_model.exporter_config; daskhpc/exporter.py reads it)."""
    return view(site_model.exporter_config, model, ledger_path, **settings)


DISCOVERY_TLS = {
    "ca_file": "/etc/daskhpc/tls/ca.pem",
    "cert_file": "/etc/daskhpc/tls/prometheus.pem",
    "key_file": "/etc/daskhpc/tls/prometheus.key",
}


def metrics_prometheus_config(model, exporter_hosts, login_hosts, rule_files, alertmanagers=None, *,
                              prometheus_host="localhost", discovery_tls=None):
    """prometheus.yml as a mapping: the exporter, Prometheus itself, and the Dask schedulers that each
    login host's discovery service lists (http_sd over mutual TLS, Prometheus's own service certificate)."""
    model = model_of(model)
    metrics = model["metrics"]
    if not exporter_hosts:
        raise AnsibleFilterError("metrics_prometheus_config: no exporter host. Fix: put the batch system's controller "
                                 "(where the slurm_exporter role runs) in the inventory group controller")
    if not login_hosts:
        raise AnsibleFilterError("metrics_prometheus_config: no login host. Fix: put the hosts where users start "
                                 "Dask clusters (where the dask_discovery role runs) in the inventory group login")
    config = {
        "global": {
            "scrape_interval": metrics["scrape_interval"],
            "evaluation_interval": metrics["scrape_interval"],
            "external_labels": {"site": model["name"]},
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": ["%s:%d" % (prometheus_host, metrics["prometheus_port"])]}],
            },
            {
                "job_name": "daskhpc_exporter",
                "static_configs": [{
                    "targets": ["%s:%d" % (host, metrics["exporter_port"]) for host in exporter_hosts],
                    "labels": {"site": model["name"], "scheduler": model["scheduler"]},
                }],
            },
            {
                # Each login host's discovery service lists its live schedulers, labelled with their
                # owners; Dask serves its own /metrics on the dashboard port (plain HTTP for now).
                "job_name": "dask",
                "http_sd_configs": [{
                    "url": "https://%s:%d/targets" % (host, metrics["discovery_port"]),
                    "refresh_interval": metrics["scrape_interval"],
                    "tls_config": dict(discovery_tls or DISCOVERY_TLS),
                } for host in login_hosts],
            },
        ],
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    return config


def metrics_rule_vars(model):
    """Model-derived thresholds used by the alert rule template (site_model.alert_rule_vars)."""
    return view(site_model.alert_rule_vars, model)


class FilterModule:
    def filters(self):
        return {
            "metrics_exporter_config": metrics_exporter_config,
            "metrics_prometheus_config": metrics_prometheus_config,
            "metrics_rule_vars": metrics_rule_vars,
        }
