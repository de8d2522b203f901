"""A cluster's dashboard and /metrics as another user, and anyone on the network, would try them.

A real site CA is made with the collection's own code; the cluster is a real BurstCluster (no workers).
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse

import pytest
from client_helpers import CA_PASSPHRASE, USER, lab_config, make_pki, site_file, tls_section

from daskhpc.cluster.base import BurstCluster
from daskhpc.cluster.owner_http import LOOPBACK, OwnerScheduler

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

OTHER = "bob-the-other-user"
SCRAPER = "prometheus-host"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki as site_pki

    directory = tmp_path_factory.mktemp("pki")
    made = make_pki(directory, users=(USER, OTHER))
    # Prometheus's service certificate, and the same host's host certificate (which must not count).
    for profile in ("service", "host"):
        site_pki.ensure_certificates(made["ca_dir"], CA_PASSPHRASE, [{
            "path": str(directory / profile / "cert.pem"), "privatekey_path": str(directory / profile / "cert.key"),
            "subject": {"CN": SCRAPER}, "subject_alt_names": [SCRAPER], "profile": profile, "days": 7,
            "create_dirs": True}], defaults={"renew_before_days": 2})
        made[profile] = {"cert": str(directory / profile / "cert.pem"), "key": str(directory / profile / "cert.key")}
    return made


@pytest.fixture(scope="module")
def cluster(pki, tmp_path_factory):
    config = lab_config(interface=None, tls=tls_section(pki))
    config["metrics-scrapers"] = [SCRAPER]
    with site_file(tmp_path_factory.mktemp("site"), config), \
            BurstCluster(progress=False, scheduler_options={"host": "127.0.0.1"}) as cluster:
        yield cluster


def get(port, path, headers=None, context=None):
    """(status, headers, body) of one GET; an HTTPS refusal during the handshake raises ssl.SSLError/OSError."""
    if context is None:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    else:
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=10, context=context)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
    finally:
        conn.close()


def client_context(pki, who=None):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.check_hostname = False  # the scheduler presents its owner's user certificate, which names no host
    if who:
        ctx.load_cert_chain(pki[who]["cert"], pki[who]["key"])
    return ctx


def dashboard(cluster):
    link = urllib.parse.urlsplit(cluster.dashboard_link)
    return link.port, urllib.parse.parse_qs(link.query)["token"][0]


def test_the_dashboard_listens_on_loopback_only_and_the_link_carries_the_token(cluster):
    scheduler = cluster.scheduler
    assert isinstance(scheduler, OwnerScheduler)
    assert scheduler.http_server.address == LOOPBACK
    port, token = dashboard(cluster)
    assert port == scheduler.http_server.port and len(token) >= 40


@pytest.mark.parametrize("path", ["/status", "/metrics", "/info/main/workers.html", "/json/identity.json",
                                  "/sitemap.json", "/statics/css/base.css", "/"])
def test_without_the_token_every_dashboard_path_is_forbidden(cluster, path):
    port, token = dashboard(cluster)
    status, _headers, body = get(port, path)
    assert status == 403 and token not in body
    status, _headers, _body = get(port, path, headers={"Cookie": "daskhpc-dashboard-%d=%s" % (port, token[:-1] + "x")})
    assert status == 403
    status, _headers, _body = get(port, path + "?token=" + token[:-1])
    assert status == 403


def test_the_token_becomes_a_cookie_and_the_cookie_opens_the_dashboard(cluster):
    port, token = dashboard(cluster)
    status, headers, _body = get(port, "/status?token=" + token)
    # Relative, so that it stays under jupyter-server-proxy's prefix (/user/alice/proxy/<port>/status).
    assert status == 302 and headers["Location"] == "./status"
    assert urllib.parse.urljoin("https://hub/user/alice/proxy/%d/status?token=x" % port, headers["Location"]) \
        == "https://hub/user/alice/proxy/%d/status" % port
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _headers, body = get(port, "/json/identity.json", headers={"Cookie": cookie.split(";")[0]})
    assert status == 200 and cluster.scheduler.id in body


def test_metrics_over_mutual_tls_answer_the_owner_and_the_sites_prometheus(cluster, pki):
    port = cluster.scheduler_info["services"]["metrics"]
    for who in (USER, "service"):
        status, _headers, body = get(port, "/metrics", context=client_context(pki, who))
        assert status == 200 and "dask_scheduler_workers" in body, who


@pytest.mark.parametrize("who", [None, OTHER, "host"], ids=["no certificate", "another user", "a host certificate"])
def test_metrics_refuse_everyone_else(cluster, pki, who):
    port = cluster.scheduler_info["services"]["metrics"]
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        get(port, "/metrics", context=client_context(pki, who))


def test_metrics_never_answer_plain_http(cluster):
    port = cluster.scheduler_info["services"]["metrics"]
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        status, _headers, _body = get(port, "/metrics")
        assert status != 200


def test_the_metrics_listener_serves_nothing_but_metrics_and_health(cluster, pki):
    port = cluster.scheduler_info["services"]["metrics"]
    assert get(port, "/health", context=client_context(pki, USER))[0] == 200
    for path in ("/status", "/json/identity.json", "/info/main/workers.html"):
        assert get(port, path, context=client_context(pki, USER))[0] == 404, path


def test_a_user_cannot_swap_in_another_scheduler_class(pki, tmp_path):
    from distributed import Scheduler

    from daskhpc.cluster.base import PolicyError

    with site_file(tmp_path, lab_config(interface=None, tls=tls_section(pki))), \
            pytest.raises(PolicyError, match="scheduler_cls"):
        BurstCluster(progress=False, scheduler_cls=Scheduler)


def test_under_jupyterhub_the_link_goes_through_the_servers_proxy(cluster):
    from daskhpc.cluster.owner_http import dashboard_link

    scheduler = cluster.scheduler
    port, token = scheduler.http_server.port, scheduler.dashboard_token
    prefix = {"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}
    assert dashboard_link(scheduler, prefix) == "/user/alice/proxy/%d/status?token=%s" % (port, token)
    public = dict(prefix, JUPYTERHUB_PUBLIC_URL="https://login.example.org:8443/user/alice/")
    assert dashboard_link(scheduler, public) == \
        "https://login.example.org:8443/user/alice/proxy/%d/status?token=%s" % (port, token)
    # Outside a single-user server (JUPYTERHUB_PUBLIC_URL alone, e.g. inherited), the loopback link.
    assert dashboard_link(scheduler, {"JUPYTERHUB_PUBLIC_URL": "https://x/"}).startswith("http://127.0.0.1:")
