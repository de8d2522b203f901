"""The exporter on the network as another user or host would try it: only Prometheus's service certificate
is served; without TLS it refuses any address but loopback. A real site CA is made with the collection's code."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest
import yaml
from client_helpers import CA_PASSPHRASE, make_pki

from daskhpc.exporter.server import ConfigError, build_registry, load_config, serve

PROMETHEUS = "prometheus-host"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki as site_pki

    directory = tmp_path_factory.mktemp("pki")
    made = make_pki(directory, users=("alice",))
    for label, cn, profile in (("exporter", "localhost", "service"), ("prometheus", PROMETHEUS, "service"),
                               ("prometheus-host", PROMETHEUS, "host"), ("other-service", "elsewhere", "service")):
        site_pki.ensure_certificates(made["ca_dir"], CA_PASSPHRASE, [{
            "path": str(directory / label / "c.pem"), "privatekey_path": str(directory / label / "c.key"),
            "subject": {"CN": cn}, "subject_alt_names": [cn, "127.0.0.1"], "profile": profile, "days": 7,
            "create_dirs": True}], defaults={"renew_before_days": 2})
        made[label] = {"cert": str(directory / label / "c.pem"), "key": str(directory / label / "c.key")}
    return made


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exporter(pki, tmp_path_factory):
    path = tmp_path_factory.mktemp("exporter") / "exporter.yaml"
    path.write_text(yaml.safe_dump({
        "listen_address": "127.0.0.1", "listen_port": free_port(), "slurm_bin_dir": "/nonexistent",
        "tls": {"cert": pki["exporter"]["cert"], "key": pki["exporter"]["key"], "ca": pki["ca"], "crl": pki["crl"],
                "allow": [PROMETHEUS]}}))
    config = load_config(str(path))
    server = serve(config, build_registry(config))
    yield config
    server.shutdown()


def scrape(config, pki, who):
    ctx = ssl.create_default_context(cafile=pki["ca"])  # the exporter's certificate is checked, name included
    if who:
        ctx.load_cert_chain(pki[who]["cert"], pki[who]["key"])
    conn = http.client.HTTPSConnection("127.0.0.1", config["listen_port"], timeout=15, context=ctx)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_prometheus_service_certificate_gets_the_metrics(exporter, pki):
    status, body = scrape(exporter, pki, "prometheus")
    assert status == 200 and "daskhpc_up" in body


@pytest.mark.parametrize("who", [None, "alice", "prometheus-host", "other-service"])
def test_everyone_else_is_refused(exporter, pki, who):
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        scrape(exporter, pki, who)


def test_plain_http_gets_nothing(exporter):
    conn = http.client.HTTPConnection("127.0.0.1", exporter["listen_port"], timeout=15)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("GET", "/metrics")
        assert conn.getresponse().status != 200


def test_without_tls_only_loopback_is_accepted(tmp_path):
    path = tmp_path / "exporter.yaml"
    path.write_text("listen_address: 0.0.0.0\n")
    with pytest.raises(ConfigError, match="unauthenticated.*Fix: give tls"):
        load_config(str(path))
    path.write_text("listen_address: 127.0.0.1\n")
    assert load_config(str(path))["tls"] is None


def test_tls_without_allowed_names_is_refused(tmp_path, pki):
    path = tmp_path / "exporter.yaml"
    path.write_text(yaml.safe_dump({"listen_address": "0.0.0.0", "tls": {
        "cert": pki["exporter"]["cert"], "key": pki["exporter"]["key"], "ca": pki["ca"], "allow": []}}))
    with pytest.raises(ConfigError, match="tls.allow"):
        load_config(str(path))
