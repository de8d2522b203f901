# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that derive the exporter's and Prometheus's configuration from the site model.

Every filter validates the model first (site_model.validate), so a bad model fails here with
the field and its fix, before any file is written.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils import site_model

DOCUMENTATION_URL = "docs/observability.md"


def _model(site):
    try:
        return site_model.validate(site)
    except site_model.SiteModelError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def metrics_exporter_config(site, ledger_path=None, *, listen_address="127.0.0.1", min_interval_seconds=10,
                            slow_interval_seconds=60, slurm_bin_dir="", tls=None):
    """The exporter's YAML configuration (see daskhpc/exporter.py).

    A scrape must end before Prometheus gives up on it (scrape_timeout: 10 s, or the scrape interval
    if that is shorter), so the exporter's budget is 80 % of that and one command may take 5/8 of it.
    """
    model = _model(site)
    budget = round(0.8 * min(10, _seconds(str(model["metrics"]["scrape_interval"]))), 1)
    return {
        "site": model["name"],
        "scheduler": model["scheduler"],
        "listen_address": listen_address,
        "listen_port": model["metrics"]["exporter_port"],
        "min_interval_seconds": int(min_interval_seconds),
        "slow_interval_seconds": int(slow_interval_seconds),
        "burst_partitions": model["burst_partitions"],
        "production_partitions": model["production_partitions"],
        "burst_max_share_ratio": model["burst"]["max_share_percent"] / 100.0,
        "burst_max_cores": model["burst"]["max_cores"],
        "ledger_path": ledger_path or os.path.join(model["ca"]["dir"], "ledger.jsonl"),
        "slurm_bin_dir": slurm_bin_dir,
        "scrape_budget_seconds": budget,
        "command_timeout_seconds": round(budget * 5 / 8, 1),
        # cert, key, ca, crl and allow (the names in Prometheus's service certificate); without it the
        # exporter serves loopback only.
        "tls": dict(tls) if tls else None,
    }


DISCOVERY_TLS = {
    "ca_file": "/etc/daskhpc/tls/ca.pem",
    "cert_file": "/etc/daskhpc/tls/prometheus.pem",
    "key_file": "/etc/daskhpc/tls/prometheus.key",
}


def metrics_prometheus_config(site, exporter_hosts, login_hosts, rule_files, alertmanagers=None, *,
                              prometheus_host="localhost", discovery_tls=None, self_basic_auth=None):
    """prometheus.yml as a mapping: the exporter, Prometheus itself, and the Dask schedulers that each
    login host's discovery service lists. Every scrape and the discovery run over TLS, with Prometheus's
    own service certificate as the client certificate; Prometheus's own web endpoint also asks for basic
    auth (``self_basic_auth``: username and password_file), which its self-scrape presents."""
    model = _model(site)
    metrics = model["metrics"]
    if not exporter_hosts:
        raise AnsibleFilterError("metrics_prometheus_config: no exporter host. Fix: put the SLURM controller "
                                 "(where the slurm_exporter role runs) in the inventory group slurm_controller")
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
                # this service certificate (daskhpc/owner_http.py). The scheduler presents its owner's user
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
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    return config


def _seconds(duration):
    unit = {"s": 1, "m": 60, "h": 3600}[duration[-1]]
    return int(duration[:-1]) * unit


def metrics_rule_vars(site):
    """Model-derived thresholds used by the alert rule template."""
    model = _model(site)
    grace = int(model["burst"]["grace_time"])
    scrape = _seconds(str(model["metrics"]["scrape_interval"]))
    return {
        "site": model["name"],
        # preemption takes up to GraceTime; allow two scrapes and a minute of scheduling on top
        "pending_behind_burst_for": "%ds" % (grace + 2 * scrape + 60),
        "renew_before_seconds": int(model["ca"]["renew_before_days"]) * 86400,
        "burst_max_cores": model["burst"]["max_cores"],
    }


class FilterModule:
    def filters(self):
        return {
            "metrics_exporter_config": metrics_exporter_config,
            "metrics_prometheus_config": metrics_prometheus_config,
            "metrics_rule_vars": metrics_rule_vars,
        }
