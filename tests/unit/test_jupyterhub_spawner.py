"""The hub's SiteSpawner keeps the kernel's table of port owners right (roles/jupyterhub).

The configuration template is rendered as the role renders it and run with JupyterHub's two base
classes stood in for (JupyterHub is not installed on the controller); `nft` is replaced by a record
of the elements it would hold. The lab test (test_jupyterhub, bob takes over alice's port) checks the
same against the real hub and kernel; this one covers the bookkeeping's corners quickly.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import sys
import types
from pathlib import Path

import jinja2
import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "roles" / "jupyterhub" / "templates" / "jupyterhub_config.py.j2"
FIRST, LAST = 20000, 20009


class Settings:
    """Stands in for traitlets' config: any attribute path can be set."""

    def __getattr__(self, name):
        value = Settings()
        setattr(self, name, value)
        return value


class LocalProcessSpawner:
    """Stands in for JupyterHub's local spawner: what SiteSpawner calls of it."""

    def __init__(self, name):
        self.user = types.SimpleNamespace(name=name)
        self.server = None
        self.port = 0
        self.status = 0  # poll(): None while running
        self.fail_start = False

    async def start(self):
        if self.fail_start:
            raise RuntimeError("the server did not start")
        self.status = None
        self.server = types.SimpleNamespace(port=self.port)
        return ("127.0.0.1", self.port)

    async def poll(self):
        return self.status

    async def stop(self, now=False):
        self.status = 0


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The rendered configuration's namespace, with the nft elements it asked for in `elements`."""
    token = tmp_path / "token"
    token.write_text("metrics-token\n")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    text = env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="test", inventory_hostname="login",
        jupyterhub_site={"name": "lab", "jupyterhub": {"port": 8443}},
        jupyterhub_tls_dir="/etc/daskhpc/tls", jupyterhub_cert_name="jupyterhub",
        jupyterhub_tls_files={"results": [{"stat": {"checksum": "0" * 40}}]},
        jupyterhub_listen_address="10.0.0.1", jupyterhub_public_host="login", jupyterhub_hub_port=8081,
        jupyterhub_proxy_api_port=8001, jupyterhub_proxy_command="/usr/bin/configurable-http-proxy",
        jupyterhub_state_dir=str(tmp_path), jupyterhub_cookie_max_age_days=1, jupyterhub_pam_service="jupyterhub",
        jupyterhub_allowed_groups=["datasci"], jupyterhub_auth_refresh_seconds=60, jupyterhub_venv="/opt/daskhpc/venv",
        jupyterhub_server_ports={"first": FIRST, "last": LAST}, jupyterhub_metrics_token_file=str(token))
    auth = types.ModuleType("jupyterhub.auth")
    auth.PAMAuthenticator = type("PAMAuthenticator", (), {})
    spawner = types.ModuleType("jupyterhub.spawner")
    spawner.LocalProcessSpawner = LocalProcessSpawner
    monkeypatch.setitem(sys.modules, "jupyterhub", types.ModuleType("jupyterhub"))
    monkeypatch.setitem(sys.modules, "jupyterhub.auth", auth)
    monkeypatch.setitem(sys.modules, "jupyterhub.spawner", spawner)
    config = Settings()
    namespace = {"get_config": lambda: config}
    exec(compile(text, str(TEMPLATE), "exec"), namespace)  # noqa: S102 - our own template, rendered here
    elements = set()

    def set_port_owner(action, port, uid):
        assert action in ("add", "delete")
        (elements.add if action == "add" else elements.discard)((port, uid))

    namespace["set_port_owner"] = set_port_owner
    namespace["elements"] = elements
    namespace["SiteSpawner"].owned.clear()
    assert config.JupyterHub.spawner_class is namespace["SiteSpawner"]
    return namespace


def run(coroutine):
    return asyncio.run(coroutine)


def me():
    import pwd

    return getpass.getuser(), pwd.getpwnam(getpass.getuser()).pw_uid


def test_a_server_gets_a_port_in_the_range_owned_by_its_user(hub):
    name, uid = me()
    spawner = hub["SiteSpawner"](name)
    ip, port = run(spawner.start())
    assert ip == "127.0.0.1" and FIRST <= port <= LAST
    assert hub["elements"] == {(port, uid)}


def test_the_owner_goes_when_the_server_stops(hub):
    name, _uid = me()
    spawner = hub["SiteSpawner"](name)
    run(spawner.start())
    run(spawner.stop())
    assert hub["elements"] == set() and not spawner.owned


def test_the_owner_goes_when_the_server_dies_by_itself(hub):
    """The hub calls stop() only for a server still running: poll() must give the port up."""
    name, _uid = me()
    spawner = hub["SiteSpawner"](name)
    run(spawner.start())
    assert run(spawner.poll()) is None and hub["elements"]
    spawner.status = -9
    assert run(spawner.poll()) == -9
    assert hub["elements"] == set()


def test_a_server_that_fails_to_start_leaves_no_owner(hub):
    name, _uid = me()
    spawner = hub["SiteSpawner"](name)
    spawner.fail_start = True
    with pytest.raises(RuntimeError):
        run(spawner.start())
    assert hub["elements"] == set()


def test_a_resumed_server_owns_its_port_again(hub):
    """After a hub restart the rules are reloaded empty; the first poll of a running server re-adds it."""
    name, uid = me()
    spawner = hub["SiteSpawner"](name)
    spawner.status, spawner.server = None, types.SimpleNamespace(port=FIRST + 3)
    assert run(spawner.poll()) is None
    assert hub["elements"] == {(FIRST + 3, uid)}


def test_ports_taken_by_someone_or_owned_by_a_server_are_not_picked(hub):
    name, _uid = me()
    taken = []
    try:
        for port in range(FIRST, LAST):  # all but the last: someone holds them
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()  # already in use on this machine: as good as taken
                continue
            taken.append(sock)
        first = hub["SiteSpawner"](name)
        assert run(first.start())[1] == LAST
        second = hub["SiteSpawner"]("nobody-else")
        second.uid = lambda: 65534
        with pytest.raises(RuntimeError, match="no free port"):
            run(second.start())
        assert {port for port, _ in hub["elements"]} == {LAST}
    finally:
        for sock in taken:
            sock.close()
