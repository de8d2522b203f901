"""JupyterHub's proxy over HTTPS, from the site's Python environment.

JupyterHub routes every browser request through configurable-http-proxy (CHP). The node.js CHP
is a Debian package (node-configurable-http-proxy) that lab hosts and offline sites may not have;
the pure-Python one (PyPI ``configurable-http-proxy``, installed from the site's wheelhouse) has the
same command line and routing API but does not yet terminate TLS, and it trusts the client's own
``X-Forwarded-*`` headers while marking every request as plain HTTP. This module runs its routing
application behind a TLS listener of our own:

- the public listener (``--ip``/``--port``) speaks only HTTPS (TLS 1.2 or later) with the hub's
  certificate from the site CA (``--ssl-cert``/``--ssl-key``, a full chain);
- requests reach the hub and the users' servers with ``X-Forwarded-Proto: https`` and the client's
  real address, whatever headers the client sent (the hub then sets its cookies ``Secure``);
- websockets keep their negotiated subprotocol and their binary frames (Bokeh's dashboard, Jupyter's
  v1 kernel protocol), which CHP 0.4.0 drops;
- the routing API (``--api-ip``/``--api-port``) stays on the loopback interface and answers only the
  token JupyterHub passes in the environment (``CONFIGPROXY_AUTH_TOKEN``, never on the command line).

JupyterHub starts it as ``c.ConfigurableHTTPProxy.command = [python, "-m", "daskhpc.jupyter_proxy"]``
(roles/jupyterhub). Options CHP has and this proxy does not implement are refused, not ignored.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import ssl
import sys

LOOPBACK_NAMES = ("localhost", "")
PROXY_TIMEOUT = 600  # seconds one proxied answer may take
MAX_CLIENTS = 512  # proxied requests in flight at once, all users together


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="daskhpc.jupyter_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--ip", default="")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-ip", default="127.0.0.1")
    parser.add_argument("--api-port", type=int, default=None)
    parser.add_argument("--error-target", default=None)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--ssl-key", required=True, help="the hub's private key (PEM)")
    parser.add_argument("--ssl-cert", required=True, help="the hub's certificate and its chain (PEM)")
    args = parser.parse_args(argv)
    if args.api_port is None:
        args.api_port = args.port + 1
    if not _is_loopback(args.api_ip):
        parser.error("--api-ip %s: the routing API listens on the loopback interface only" % args.api_ip)
    return args


def _is_loopback(host):
    if host in LOOPBACK_NAMES:
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_context(cert, key):
    """The public listener's TLS: the hub's certificate chain, TLS 1.2 or later, no client certificates."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


# Headers a client may send to pretend it came from elsewhere or over another scheme.
FORWARDED = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip",
             "x-scheme", "forwarded")


def proxy_handler_class():
    from configurable_http_proxy.handlers import ProxyHandler
    from tornado import httputil

    class HTTPSProxyHandler(ProxyHandler):
        """CHP's handler, with the forwarding headers set from this connection (HTTPS) and nothing else."""

        def _get_proxy_request(self, url):
            request = super()._get_proxy_request(url)
            # CHP hands over a plain dict: its keys keep the client's spelling (X-Real-Ip, x-real-ip, ...).
            request.headers = httputil.HTTPHeaders(
                [(k, v) for k, v in (request.headers.get_all() if hasattr(request.headers, "get_all")
                                     else request.headers.items()) if k.lower() not in FORWARDED])
            host = self.request.host or ""
            request.headers["X-Forwarded-For"] = self.request.remote_ip or ""
            request.headers["X-Forwarded-Proto"] = "https"
            request.headers["X-Forwarded-Host"] = host
            request.headers["X-Forwarded-Port"] = host.rsplit(":", 1)[1] if host.rsplit(":", 1)[-1].isdigit() \
                else "443"
            return request

        def select_subprotocol(self, subprotocols):
            # The browser's offer went upstream with its request; answer with what upstream chose (a
            # browser that offered subprotocols drops a socket whose answer names none: Bokeh's does).
            chosen = getattr(self.ws_client, "selected_subprotocol", None)
            return chosen if chosen in subprotocols else None

        def on_message(self, message):
            # Binary frames stay binary (CHP sends every frame upstream as text; Jupyter's v1 kernel
            # protocol and Bokeh send binary ones).
            if self.ws_client:
                prefix = self.target["prefix"] if self.target else ""
                if prefix:
                    self.proxy.update_last_activity(prefix)
                self.ws_client.write_message(message, binary=isinstance(message, bytes))

    return HTTPSProxyHandler


def build(args):
    """(proxy application, API application) for these arguments."""
    from configurable_http_proxy import log as chp_log
    from configurable_http_proxy.configproxy import PythonProxy
    from tornado.httpclient import AsyncHTTPClient
    from tornado.web import Application

    chp_log.setLevel(args.log_level.upper())
    # CHP waits for a whole answer before passing it on (it does not stream): the hub's spawn progress is
    # an event stream that ends when the server is up, so an answer may take up to PROXY_TIMEOUT seconds.
    # Tornado's client defaults (10 requests in flight for everyone, 20 s) would stall a shared hub.
    AsyncHTTPClient.configure(None, max_clients=MAX_CLIENTS)
    options = {"log": chp_log, "auth_token": os.environ.get("CONFIGPROXY_AUTH_TOKEN"),
               "error_target": args.error_target, "x_forward": False, "timeout": None,
               "proxy_timeout": PROXY_TIMEOUT,
               "custom_headers": {}, "host_routing": False, "prepend_path": True, "include_prefix": True}
    if not options["auth_token"]:
        raise SystemExit("daskhpc.jupyter_proxy: CONFIGPROXY_AUTH_TOKEN is not set: the routing API would be open")
    proxy = PythonProxy(options)
    app = Application([(r"/(.*)", proxy_handler_class(), {"proxy": proxy})])
    return app, proxy.api_app


def main(argv=None):
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    args = parse_args(sys.argv[1:] if argv is None else argv)
    app, api = build(args)
    HTTPServer(app, ssl_options=tls_context(args.ssl_cert, args.ssl_key)).listen(args.port, args.ip)
    HTTPServer(api).listen(args.api_port, args.api_ip)
    log = logging.getLogger("configurable_http_proxy")
    log.info("proxying https://%s:%d, routing API on %s:%d", args.ip or "*", args.port, args.api_ip, args.api_port)
    IOLoop.current().start()


if __name__ == "__main__":
    main()
