# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that derive the exporter's and Prometheus's configuration from the site model.

The views live in module_utils/_core/site_model.py; these take the validated model (the fact daskhpc_model).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import site_model
from ansible_collections.onprem.daskhpc.plugins.plugin_utils.model import model_of, view

DOCUMENTATION_URL = "docs/observability.md"


def metrics_exporter_config(model, ledger_path=None, **settings):
    """The exporter's YAML configuration (site_model.exporter_config; daskhpc/exporter/server.py reads it)."""
    return view(site_model.exporter_config, model, ledger_path, **settings)


DISCOVERY_TLS = {
    "ca_file": "/etc/daskhpc/tls/ca.pem",
    "cert_file": "/etc/daskhpc/tls/prometheus.pem",
    "key_file": "/etc/daskhpc/tls/prometheus.key",
}


def metrics_prometheus_config(model, exporter_hosts, login_hosts, rule_files, alertmanagers=None, *,
                              prometheus_host="localhost", discovery_tls=None, self_basic_auth=None,
                              jupyterhub_token_file=None):
    """prometheus.yml as a mapping: the exporter, Prometheus itself, and the Dask schedulers that each
    login host's discovery service lists. Every scrape and the discovery run over TLS, with Prometheus's
    own service certificate as the client certificate; Prometheus's own web endpoint also asks for basic
    auth (``self_basic_auth``: username and password_file), which its self-scrape presents. When the model
    enables JupyterHub, its /hub/metrics on the login hosts too, with the token in ``jupyterhub_token_file``
    (a JupyterHub service whose only scope is read:metrics)."""
    model = model_of(model)
    metrics = model["metrics"]
    if not exporter_hosts:
        raise AnsibleFilterError("metrics_prometheus_config: no exporter host. Fix: put the batch system's controller "
                                 "(where the slurm_exporter role runs) in the inventory group controller")
    if not login_hosts:
        raise AnsibleFilterError("metrics_prometheus_config: no login host. Fix: put the hosts where users start "
                                 "Dask clusters (where the dask_discovery role runs) in the inventory group login")
    tls = dict(discovery_tls or DISCOVERY_TLS)
    config = {
        "global": {
            "scrape_interval": metrics["scrape_interval"],
            "evaluation_interval": metrics["scrape_interval"],
            "external_labels": {"site": model["name"]},
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            dict({
                "job_name": "prometheus",
                "scheme": "https",
                "tls_config": {"ca_file": tls["ca_file"]},
                "static_configs": [{"targets": ["%s:%d" % (prometheus_host, metrics["prometheus_port"])]}],
            }, **({"basic_auth": dict(self_basic_auth)} if self_basic_auth else {})),
            {
                # The exporter serves only this service certificate (mutual TLS), under its host's name.
                "job_name": "daskhpc_exporter",
                "scheme": "https",
                "tls_config": dict(tls),
                "static_configs": [{
                    "targets": ["%s:%d" % (host, metrics["exporter_port"]) for host in exporter_hosts],
                    "labels": {"site": model["name"], "scheduler": model["scheduler"]},
                }],
            },
            {
                # Each login host's discovery service lists its live schedulers, labelled with their
                # owners. Each scheduler serves /metrics over mutual TLS and lets in only its owner and
                # this service certificate (daskhpc/cluster/owner_http.py). The scheduler presents its owner's user
                # certificate, which names no host, so Prometheus cannot match it against the target
                # address: it skips that check. Targets are vetted by the discovery service instead
                # (a socket of the labelled user on that host), and the data is protected by the
                # scheduler's check of Prometheus's certificate.
                "job_name": "dask",
                "scheme": "https",
                "tls_config": dict(tls, insecure_skip_verify=True),
                "http_sd_configs": [{
                    "url": "https://%s:%d/targets" % (host, metrics["discovery_port"]),
                    "refresh_interval": metrics["scrape_interval"],
                    "tls_config": dict(tls),
                } for host in login_hosts],
            },
        ],
    }
    if model["jupyterhub"]["enabled"]:
        if not jupyterhub_token_file:
            raise AnsibleFilterError("metrics_prometheus_config: the model enables jupyterhub but no token file is "
                                     "given. Fix: pass jupyterhub_token_file (roles/prometheus does)")
        config["scrape_configs"].append({
            # The hub's HTTPS port (its certificate names the login host) and a token that may only read metrics.
            "job_name": "jupyterhub",
            "scheme": "https",
            "metrics_path": "/hub/metrics",
            "authorization": {"type": "Bearer", "credentials_file": jupyterhub_token_file},
            "tls_config": {"ca_file": tls["ca_file"]},
            "static_configs": [{"targets": ["%s:%d" % (host, model["jupyterhub"]["port"]) for host in login_hosts],
                                "labels": {"site": model["name"]}}],
        })
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
