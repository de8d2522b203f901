"""prometheus.yml from the site model: Dask schedulers come from each login host's discovery service."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.daskhpc.plugins.filter import metrics

REPO = Path(__file__).resolve().parents[2]


def lab_site(jupyterhub=False):
    """The lab's model; JupyterHub (and so its scrape job and token file) only where a test asks for it."""
    with open(REPO / "inventories" / "lab" / "group_vars" / "all" / "site.yml", encoding="utf-8") as handle:
        site = yaml.safe_load(handle)["daskhpc_site"]
    site.setdefault("jupyterhub", {})["enabled"] = jupyterhub
    return site


def test_dask_targets_come_from_each_login_hosts_discovery_service_over_mutual_tls():
    config = metrics.metrics_prometheus_config(lab_site(), ["ctl"], ["login1", "login2"], ["rules.yml"])
    dask = {job["job_name"]: job for job in config["scrape_configs"]}["dask"]
    assert "file_sd_configs" not in dask
    # the scrape is over mutual TLS too: the scheduler checks Prometheus's certificate; Prometheus cannot
    # check a scheduler's (a user certificate names no host), the discovery service vets the targets
    assert dask["scheme"] == "https"
    assert dask["tls_config"] == {"ca_file": "/etc/daskhpc/tls/ca.pem", "cert_file": "/etc/daskhpc/tls/prometheus.pem",
                                  "key_file": "/etc/daskhpc/tls/prometheus.key", "insecure_skip_verify": True}
    assert dask["http_sd_configs"] == [{
        "url": "https://%s:9818/targets" % host,
        "refresh_interval": "15s",
        "tls_config": {"ca_file": "/etc/daskhpc/tls/ca.pem", "cert_file": "/etc/daskhpc/tls/prometheus.pem",
                       "key_file": "/etc/daskhpc/tls/prometheus.key"},
    } for host in ("login1", "login2")]


def test_the_exporter_and_prometheus_itself_are_scraped_over_verified_tls():
    config = metrics.metrics_prometheus_config(lab_site(), ["ctl"], ["login"], [], prometheus_host="svc",
                                               self_basic_auth={"username": "ops", "password_file": "/p"})
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    exporter, itself = jobs["daskhpc_exporter"], jobs["prometheus"]
    assert exporter["scheme"] == "https" and "insecure_skip_verify" not in exporter["tls_config"]
    assert exporter["tls_config"]["cert_file"] == "/etc/daskhpc/tls/prometheus.pem"
    assert exporter["static_configs"][0]["targets"] == ["ctl:9817"]
    assert itself["scheme"] == "https" and itself["static_configs"][0]["targets"] == ["svc:9090"]
    assert itself["basic_auth"] == {"username": "ops", "password_file": "/p"}


def test_the_exporter_serves_tls_only_when_told_so_and_loopback_otherwise():
    plain = metrics.metrics_exporter_config(lab_site())
    assert plain["tls"] is None and plain["listen_address"] == "127.0.0.1"
    tls = {"cert": "c", "key": "k", "ca": "a", "crl": "r", "allow": ["svc"]}
    assert metrics.metrics_exporter_config(lab_site(), listen_address="10.0.0.1", tls=tls)["tls"] == tls


def test_the_discovery_port_comes_from_the_model():
    site = lab_site()
    site["metrics"]["discovery_port"] = 19818
    config = metrics.metrics_prometheus_config(site, ["ctl"], ["login"], [])
    dask = {job["job_name"]: job for job in config["scrape_configs"]}["dask"]
    assert dask["http_sd_configs"][0]["url"] == "https://login:19818/targets"


def test_no_login_host_is_an_error_with_its_fix():
    with pytest.raises(AnsibleFilterError, match="inventory group login"):
        metrics.metrics_prometheus_config(lab_site(), ["ctl"], [], [])


def test_jupyterhub_metrics_are_scraped_over_verified_tls_with_a_read_only_token():
    config = metrics.metrics_prometheus_config(lab_site(jupyterhub=True), ["ctl"], ["login1", "login2"], [],
                                               jupyterhub_token_file="/etc/prometheus/jupyterhub-token")
    hub = {job["job_name"]: job for job in config["scrape_configs"]}["jupyterhub"]
    assert hub["scheme"] == "https" and hub["metrics_path"] == "/hub/metrics"
    assert hub["tls_config"] == {"ca_file": "/etc/daskhpc/tls/ca.pem"}
    assert hub["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/jupyterhub-token"}
    assert hub["static_configs"][0]["targets"] == ["login1:8443", "login2:8443"]


def test_no_jupyterhub_job_when_the_model_leaves_it_off_and_an_error_without_its_token():
    jobs = [job["job_name"] for job in metrics.metrics_prometheus_config(lab_site(), ["ctl"], ["login"], [])
            ["scrape_configs"]]
    assert "jupyterhub" not in jobs
    with pytest.raises(AnsibleFilterError, match="jupyterhub_token_file"):
        metrics.metrics_prometheus_config(lab_site(jupyterhub=True), ["ctl"], ["login"], [])
