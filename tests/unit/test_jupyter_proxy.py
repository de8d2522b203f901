"""daskhpc.jupyter_proxy: JupyterHub's proxy speaks only HTTPS with the site certificate, forwards the
connection's own scheme and address (not the client's claims), and its routing API answers only the token."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.onprem.daskhpc.plugins.module_utils import pki
from daskhpc import jupyter_proxy

PASS = "unit-ca-passphrase"
TOKEN = "unit-routing-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca_dir = str(base / "ca")
    pki.ensure_ca(ca_dir, "unit CA", PASS)
    req = {"path": str(base / "hub.pem"), "subject": {"CN": "login.test"},
           "subject_alt_names": ["login.test", "IP:127.0.0.1"], "profile": "service"}
    pki.ensure_certificates(ca_dir, PASS, [req], defaults={"days": 90, "renew_before_days": 30})
    return {"cert": str(base / "hub.pem"), "key": str(base / "hub.key"), "ca": os.path.join(ca_dir, "ca.pem")}


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def proxy(certs):
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port, api_port = free_port(), free_port()
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "daskhpc.jupyter_proxy", "--ip", "127.0.0.1", "--port", str(port),
                             "--api-ip", "127.0.0.1", "--api-port", str(api_port), "--ssl-key", certs["key"],
                             "--ssl-cert", certs["cert"], "--log-level", "warning"], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", api_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        status, _ = api(api_port, "POST", "/api/routes/user/alice",
                        {"target": "http://127.0.0.1:%d" % backend.server_address[1]})
        assert status == 201
        yield {"port": port, "api_port": api_port, "ca": certs["ca"]}
    finally:
        proc.terminate()
        proc.wait(10)
        backend.shutdown()


def api(port, method, path, body=None, token=TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": "token %s" % token} if token else {}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def https_get(proxy, path, headers=None):
    ctx = ssl.create_default_context(cafile=proxy["ca"])
    conn = http.client.HTTPSConnection("127.0.0.1", proxy["port"], context=ctx, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def test_the_proxy_serves_https_with_the_site_certificate_and_forwards_https(proxy):
    status, body = https_get(proxy, "/user/alice/api/status")
    assert status == 200
    seen = json.loads(body)
    assert seen["path"] == "/user/alice/api/status"
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"


def test_a_clients_forwarding_claims_are_replaced(proxy):
    claims = {"X-Forwarded-For": "10.0.0.99", "X-Real-IP": "10.0.0.99", "X-Forwarded-Proto": "http",
              "Forwarded": "for=10.0.0.99"}
    status, body = https_get(proxy, "/user/alice/", claims)
    assert status == 200
    headers = json.loads(body)["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert "x-real-ip" not in headers and "forwarded" not in headers


def test_plain_http_is_not_served(proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy["port"], timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        conn.request("GET", "/user/alice/")
        response = conn.getresponse()
        if response.status:  # a TLS server answers a plain request with an alert or 400, never the page
            assert b"x-forwarded" not in response.read()
            raise ConnectionError(response.status)


def test_a_client_that_does_not_trust_the_site_ca_refuses_the_proxy(proxy):
    ctx = ssl.create_default_context()  # the system's roots only
    conn = http.client.HTTPSConnection("127.0.0.1", proxy["port"], context=ctx, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/")


def test_the_routing_api_answers_only_the_token(proxy):
    assert api(proxy["api_port"], "GET", "/api/routes", token=None)[0] == 403
    assert api(proxy["api_port"], "GET", "/api/routes", token="guess")[0] == 403
    assert api(proxy["api_port"], "POST", "/api/routes/user/bob", {"target": "http://127.0.0.1:1"},
               token="guess")[0] == 403
    status, body = api(proxy["api_port"], "GET", "/api/routes")
    assert status == 200 and "/user/alice" in json.loads(body)


def test_the_routing_api_never_leaves_the_loopback_interface():
    with pytest.raises(SystemExit):
        jupyter_proxy.parse_args(["--api-ip", "0.0.0.0", "--ssl-key", "k", "--ssl-cert", "c"])
    with pytest.raises(SystemExit):
        jupyter_proxy.parse_args(["--api-ip", "login.example.org", "--ssl-key", "k", "--ssl-cert", "c"])
    assert jupyter_proxy.parse_args(["--api-ip", "127.0.0.1", "--ssl-key", "k", "--ssl-cert", "c"]).api_port == 8001


def test_without_tls_or_a_token_the_proxy_does_not_start(certs, monkeypatch):
    with pytest.raises(SystemExit):
        jupyter_proxy.parse_args(["--port", "8000"])  # no --ssl-key/--ssl-cert: no plain-HTTP hub
    monkeypatch.delenv("CONFIGPROXY_AUTH_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="CONFIGPROXY_AUTH_TOKEN"):
        jupyter_proxy.build(jupyter_proxy.parse_args(["--ssl-key", certs["key"], "--ssl-cert", certs["cert"]]))


@pytest.fixture(scope="module")
def ws_backend():
    """A websocket server that chooses the 'bokeh' subprotocol and echoes each frame with its kind."""
    import asyncio

    from tornado.httpserver import HTTPServer
    from tornado.web import Application
    from tornado.websocket import WebSocketHandler

    class Echo(WebSocketHandler):
        def select_subprotocol(self, subprotocols):
            return "bokeh" if "bokeh" in subprotocols else None

        def on_message(self, message):
            kind = "binary" if isinstance(message, bytes) else "text"
            self.write_message(json.dumps({"kind": kind, "length": len(message)}))

    ready, state = threading.Event(), {}

    def serve():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = HTTPServer(Application([(r"/.*", Echo)]))
        state["port"] = free_port()
        server.listen(state["port"], "127.0.0.1")
        state["loop"] = loop
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
    yield state["port"]
    state["loop"].call_soon_threadsafe(state["loop"].stop)


def test_websockets_keep_their_subprotocol_and_binary_frames(proxy, ws_backend):
    import asyncio

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    status, _ = api(proxy["api_port"], "POST", "/api/routes/user/carol", {"target": "http://127.0.0.1:%d" % ws_backend})
    assert status == 201

    async def talk():
        ctx = ssl.create_default_context(cafile=proxy["ca"])
        request = HTTPRequest("wss://127.0.0.1:%d/user/carol/status/ws" % proxy["port"], ssl_options=ctx)
        conn = await websocket_connect(request, subprotocols=["bokeh", "session-token"])
        try:
            chosen = conn.selected_subprotocol
            await conn.write_message(b"\x00\xff\x80binary", binary=True)
            binary = json.loads(await conn.read_message())
            await conn.write_message("text")
            text = json.loads(await conn.read_message())
        finally:
            conn.close()
        return chosen, binary, text

    chosen, binary, text = asyncio.run(asyncio.wait_for(talk(), 30))
    assert chosen == "bokeh"  # a browser drops a socket whose answer names none of what it offered
    assert binary == {"kind": "binary", "length": 9}
    assert text == {"kind": "text", "length": 4}
