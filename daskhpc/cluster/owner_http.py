"""The scheduler's HTTP endpoints, reachable only by the cluster's owner (and the site's Prometheus).

distributed serves the dashboard and Prometheus's ``/metrics`` on one plain-HTTP listener, bound to
every interface and open to anyone: on a shared login host any user, or anyone on the network,
would read task names and counts. ``OwnerScheduler`` replaces that listener with two:

- **the dashboard** on the loopback interface only, gated by a secret token. The link the cluster
  prints carries ``?token=...``; the first request with it gets an HttpOnly cookie and a redirect,
  later requests (Bokeh's websocket included) carry the cookie. Other local users can connect to the
  port but get 403 without the token, which only the owner's process knows (as Jupyter does). The
  owner reaches it through ``ssh -L`` or, in JupyterHub, through jupyter-server-proxy.
- **/metrics** (and ``/health``) on the scheduler's own interface over mutual TLS: the peer must present
  the owner's site certificate or the site Prometheus's service certificate (``metrics-scrapers`` in
  the site file), checked as the scheduler's comms check peers (daskhpc.security).
"""

from __future__ import annotations

import hmac
import os
import secrets
import ssl
import urllib.parse

from distributed import Scheduler
from distributed.comm.addressing import get_address_host
from distributed.http.utils import get_handlers
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from daskhpc import config as site
from daskhpc.security import bind_context

# What the mutual-TLS listener serves: Dask's Prometheus exposition and its health check, nothing else.
METRICS_ROUTES = ["distributed.http.scheduler.prometheus", "distributed.http.health"]
LOOPBACK = "127.0.0.1"


class _Forbidden(web.RequestHandler):
    def prepare(self):
        self.set_status(403)
        self.finish("This Dask dashboard belongs to another session: open the link (with ?token=) that "
                    "the cluster printed.\n")


class _Login(web.RequestHandler):
    """Turns a valid ``?token=`` into a cookie, then sends the browser to the same page without the token."""

    def initialize(self, cookie, token):
        self.cookie, self.token = cookie, token

    def prepare(self):
        self.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict", path="/")
        query = [(k, v) for k, v in urllib.parse.parse_qsl(self.request.query) if k != "token"]
        # Relative to the page itself, so that it is right behind a proxy that adds a prefix
        # (jupyter-server-proxy serves this /status at /user/<name>/proxy/<port>/status).
        page = "./" + self.request.path.rsplit("/", 1)[-1]
        self.redirect(page + ("?" + urllib.parse.urlencode(query) if query else ""))


def gate_application(application, token, cookie):
    """Let a request through to ``application`` only with the session's cookie (or its token, which sets it).

    The check sits in ``find_handler``, where Tornado routes every request, so it covers every
    handler the dashboard registers, including Bokeh's application and its websocket.
    """
    route = application.find_handler

    def find_handler(request, **kwargs):
        if hmac.compare_digest((request.cookies.get(cookie).value if cookie in request.cookies else "").encode(),
                               token.encode()):
            return route(request, **kwargs)
        given = request.query_arguments.get("token", [b""])[-1]
        if hmac.compare_digest(given, token.encode()):
            return application.get_handler_delegate(request, _Login, {"cookie": cookie, "token": token})
        return application.get_handler_delegate(request, _Forbidden)

    application.find_handler = find_handler
    return application


def metrics_context(security, owner, scrapers):
    """Server-side TLS for /metrics: the user's certificate, the site bundle, a client certificate
    required, and only the owner or a site Prometheus let in."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=security.tls_ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(security.tls_scheduler_cert, security.tls_scheduler_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return bind_context(ctx, owner, getattr(security, "crl_file", None), services=scrapers)


class OwnerScheduler(Scheduler):
    """distributed's Scheduler with a token-gated loopback dashboard and a mutual-TLS /metrics."""

    def start_http_server(self, routes, dashboard_address, default_port=0, ssl_options=None):
        # Only the port the user asked for is kept: the dashboard never leaves the loopback interface.
        port = _port_of(dashboard_address)
        super().start_http_server(routes, "%s:%d" % (LOOPBACK, port), default_port=0)
        self.dashboard_token = secrets.token_urlsafe(32)
        gate_application(self.http_application, self.dashboard_token, "daskhpc-dashboard-%d" % self.http_server.port)
        self._start_metrics_server()

    def _start_metrics_server(self):
        owner = getattr(self.security, "owner", None)
        if not owner or not self.security.tls_scheduler_cert:
            # Without the site's TLS there is no identity to check: serve no metrics rather than open ones.
            self.metrics_server = None
            return
        scrapers = frozenset(site.policy().get("metrics-scrapers") or ())
        app = web.Application(get_handlers(server=self, modules=METRICS_ROUTES))
        self.metrics_server = HTTPServer(app, ssl_options=metrics_context(self.security, owner, scrapers))
        address = self._start_address
        if isinstance(address, (list, tuple)):
            address = address[0]
        host = get_address_host(address) if address else LOOPBACK
        sockets = bind_sockets(0, host or LOOPBACK)
        self.metrics_server.add_sockets(sockets)
        self.metrics_server.address, self.metrics_server.port = sockets[0].getsockname()[:2]
        self.services["metrics"] = self.metrics_server

    async def close(self, *args, **kwargs):
        if getattr(self, "metrics_server", None) is not None:
            self.metrics_server.stop()
        return await super().close(*args, **kwargs)


def _port_of(dashboard_address):
    """The port of a dashboard address such as ``:8787``, ``0.0.0.0:8787``, ``8787`` or None (any port)."""
    if dashboard_address in (None, ""):
        return 0
    text = str(dashboard_address)
    port = text.rsplit(":", 1)[-1]
    return int(port) if port.isdigit() else 0


def dashboard_link(scheduler, environ=None):
    """The owner's dashboard link, token included (the scheduler runs in the owner's own process).

    In a JupyterHub single-user server it goes through the server's jupyter-server-proxy, which lets only
    the server's owner in (the hub's login) and reaches the loopback port: the user's public URL from
    JUPYTERHUB_PUBLIC_URL when the hub names one, else the path under JUPYTERHUB_SERVICE_PREFIX.
    """
    environ = os.environ if environ is None else environ
    port, token = scheduler.http_server.port, scheduler.dashboard_token
    prefix = environ.get("JUPYTERHUB_PUBLIC_URL") or environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix and environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        return "%s/proxy/%d/status?token=%s" % (prefix.rstrip("/"), port, token)
    return "http://%s:%d/status?token=%s" % (LOOPBACK, port, token)
