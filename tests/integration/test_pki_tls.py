"""Issued certificates in real use: openssl verify, Python ssl handshakes, and Dask clusters bound to identity.

No lab daemons are needed: a CA is made in a temporary directory with the collection's own
code, and real distributed schedulers, workers and clients run in this process (and one
`dask worker` subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading

import dask
import pytest
import yaml
from distributed import Client, Scheduler, Security, Worker

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki
from daskhpc import config as site_config
from daskhpc import security

PASS = "integration passphrase 1"
# A refused Client is garbage-collected after its loop closed; distributed then warns from __del__.
pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca_dir = str(base / "ca")
    pki.ensure_ca(ca_dir, "itest CA", PASS)
    reqs = [
        {"path": str(base / "host.pem"), "subject": {"CN": "localhost"},
         "subject_alt_names": ["localhost", "IP:127.0.0.1"], "profile": "host", "days": 90},
        {"path": str(base / "ed.pem"), "subject": {"CN": "localhost"}, "key_type": "ed25519",
         "subject_alt_names": ["localhost"], "profile": "service", "days": 90},
        {"path": str(base / "rsa.pem"), "subject": {"CN": "localhost"}, "key_type": "rsa-2048",
         "subject_alt_names": ["localhost"], "profile": "service", "days": 90},
    ]
    for user in ("alice", "bob", "alice-revoked"):
        reqs.append({"path": str(base / user / "user.pem"), "subject": {"CN": user.split("-", 1)[0]},
                     "profile": "user", "days": 7, "create_dirs": True})
    results, _records = pki.ensure_certificates(ca_dir, PASS, reqs, defaults={"renew_before_days": 2})
    serials = {os.path.relpath(r["path"], base): r["after"]["serial"] for r in results}
    pki.ensure_crl(ca_dir, PASS, revoke=[{"serial": serials["alice-revoked/user.pem"], "reason": "key_compromise"}])
    return {"base": base, "ca_dir": ca_dir, "bundle": os.path.join(ca_dir, "ca.pem"),
            "crl": os.path.join(ca_dir, "crl.pem"), "serials": serials}


def user_paths(site, user):
    return {"ca": site["bundle"], "cert": str(site["base"] / user / "user.pem"),
            "key": str(site["base"] / user / "user.key"), "crl": site["crl"]}


# --- openssl and Python ssl -----------------------------------------------------------

@pytest.mark.parametrize("name", ["host.pem", "ed.pem", "rsa.pem", "alice/user.pem", "bob/user.pem"])
def test_openssl_verifies_issued_certificate_against_chain(site, name):
    root = os.path.join(site["ca_dir"], "root.pem")
    out = subprocess.run(["openssl", "verify", "-CAfile", root, "-untrusted",
                          os.path.join(site["ca_dir"], "intermediate.pem"), str(site["base"] / name)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip().endswith(": OK"), out.stdout + out.stderr


def test_openssl_crl_check_rejects_revoked(site):
    common = ["openssl", "verify", "-crl_check", "-CRLfile", site["crl"], "-CAfile", site["bundle"]]
    ok = subprocess.run([*common, str(site["base"] / "alice/user.pem")], capture_output=True, text=True, check=False)
    bad = subprocess.run([*common, str(site["base"] / "alice-revoked/user.pem")], capture_output=True, text=True,
                         check=False)
    assert ok.returncode == 0
    assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr


def _serve_once(ctx, sock, result):
    conn, _address = sock.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            result["version"] = tls.version()
            tls.sendall(b"hello")
    except (ssl.SSLError, OSError) as exc:
        result["error"] = exc


@pytest.mark.parametrize("name", ["host", "ed", "rsa"])
def test_python_ssl_handshake_with_hostname_check(site, name):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(site["base"] / ("%s.pem" % name)), str(site["base"] / ("%s.key" % name)))
    client_ctx = ssl.create_default_context(cafile=os.path.join(site["ca_dir"], "root.pem"))  # root only
    with socket.create_server(("127.0.0.1", 0)) as sock:
        result = {}
        thread = threading.Thread(target=_serve_once, args=(server_ctx, sock, result))
        thread.start()
        with socket.create_connection(sock.getsockname()) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.recv(5) == b"hello"
            assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)
        thread.join(10)
    assert result.get("version") in ("TLSv1.2", "TLSv1.3") and "error" not in result


def test_python_ssl_refuses_wrong_hostname(site):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(site["base"] / "host.pem"), str(site["base"] / "host.key"))
    client_ctx = ssl.create_default_context(cafile=site["bundle"])
    with socket.create_server(("127.0.0.1", 0)) as sock:
        thread = threading.Thread(target=_serve_once, args=(server_ctx, sock, {}))
        thread.start()
        with socket.create_connection(sock.getsockname()) as raw, pytest.raises(ssl.SSLCertVerificationError):
            client_ctx.wrap_socket(raw, server_hostname="other.example.org")
        thread.join(10)


# --- Dask bound to identity ------------------------------------------------------------

@contextlib.contextmanager
def site_tls(tls, directory):
    """A site file whose tls section is ``tls`` (what the dask_client role writes), used for the duration.

    The client reads TLS paths from the site file only (daskhpc.config.SITE_FILE), not from Dask config.
    """
    path = directory / "daskhpc.yaml"
    path.write_text(yaml.safe_dump({"daskhpc": {"tls": tls}}))
    with pytest.MonkeyPatch.context() as patch, dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        patch.setattr(site_config, "SITE_FILE", str(path))
        patch.setattr(site_config, "SITE_FILE_OWNER", os.geteuid())
        yield str(path)


@pytest.fixture
def as_user(site, tmp_path):
    """The site file pointing tls at a user's credential."""
    def configure(user):
        return site_tls(user_paths(site, user), tmp_path)
    return configure


def run(coro):
    return asyncio.run(coro)


async def _client_can_compute(address, sec):
    async with Client(address, security=sec, asynchronous=True, timeout="3s") as client:
        return await client.submit(lambda x: x + 1, 41)


async def _client_connects(address, sec):
    async with Client(address, security=sec, asynchronous=True, timeout="3s") as client:
        return (await client.scheduler.identity())["address"]


async def _client_refused(address, sec):
    with pytest.raises((OSError, asyncio.TimeoutError)):
        async with Client(address, security=sec, asynchronous=True, timeout="3s"):
            pass


def test_owner_client_accepted_and_worker_joins(site, as_user):
    async def scenario():
        with as_user("alice"):
            sec = security.cluster_security(owner="alice")
            async with Scheduler(security=sec, protocol="tls", dashboard_address=None) as s, \
                    Worker(s.address, security=sec, nthreads=1, dashboard=False):
                assert s.address.startswith("tls://")
                assert await _client_can_compute(s.address, sec) == 42
    run(scenario())


def test_plaintext_client_refused(site, as_user):
    async def scenario():
        with as_user("alice"):
            sec = security.cluster_security(owner="alice")
            async with Scheduler(security=sec, protocol="tls", dashboard_address=None) as s:
                plain = s.address.replace("tls://", "tcp://")
                await _client_refused(plain, Security(require_encryption=False))
                with pytest.raises(RuntimeError, match="encryption required"):
                    await Client(plain, security=sec, asynchronous=True, timeout="3s")
    run(scenario())


def test_other_users_valid_certificate_refused(site, as_user, caplog):
    async def scenario():
        with as_user("alice"):
            alice = security.cluster_security(owner="alice")
        with as_user("bob"):
            bob = security.cluster_security(owner="bob")
            plain_bob = Security(require_encryption=True, tls_ca_file=site["bundle"],
                                 tls_client_cert=user_paths(site, "bob")["cert"],
                                 tls_client_key=user_paths(site, "bob")["key"])
        async with Scheduler(security=alice, protocol="tls", dashboard_address=None) as s:
            await _client_refused(s.address, bob)        # bob's own binding refuses alice's scheduler
            await _client_refused(s.address, plain_bob)  # stock distributed client: alice's scheduler refuses bob
            assert await _client_connects(s.address, alice) == s.address
    with caplog.at_level("WARNING"):
        run(scenario())
    assert "is not the cluster owner alice" in caplog.text


def test_revoked_certificate_refused_where_crl_checked(site, as_user):
    revoked = user_paths(site, "alice-revoked")

    async def scenario():
        with as_user("alice"):
            sec = security.cluster_security(owner="alice")
        with as_user("alice-revoked"):
            sec_revoked = security.cluster_security(owner="alice")
        assert "key_compromise" not in repr(sec_revoked)
        async with Scheduler(security=sec, protocol="tls", dashboard_address=None) as s:
            await _client_refused(s.address, sec_revoked)  # right CN, but revoked
            # without the CRL (crl file absent) the same certificate would pass: the CRL is what refuses it
            no_crl = security.IdentitySecurity(owner="alice", crl_file=None, require_encryption=True,
                                               tls_ca_file=revoked["ca"], tls_client_cert=revoked["cert"],
                                               tls_client_key=revoked["key"])
            sched_no_crl = security.IdentitySecurity(owner="alice", crl_file=None, require_encryption=True,
                                                     tls_ca_file=revoked["ca"],
                                                     tls_scheduler_cert=user_paths(site, "alice")["cert"],
                                                     tls_scheduler_key=user_paths(site, "alice")["key"],
                                                     tls_worker_cert=user_paths(site, "alice")["cert"],
                                                     tls_worker_key=user_paths(site, "alice")["key"])
        async with Scheduler(security=sched_no_crl, protocol="tls", dashboard_address=None) as s2, \
                Worker(s2.address, security=sched_no_crl, nthreads=1, dashboard=False):
            assert await _client_can_compute(s2.address, no_crl) == 42
    run(scenario())


def test_expired_crl_is_a_clear_error(site, tmp_path):
    import datetime

    ctx = ssl.create_default_context(cafile=site["bundle"])  # the CRL is trusted only if the site CA signed it
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    with pytest.raises(ssl.SSLError, match="CRL .* expired"):
        security.load_crl(ctx, site["crl"], now=later)


def test_missing_credential_and_loose_key_mode_are_clear(site, as_user, tmp_path):
    with site_tls({**user_paths(site, "alice"), "cert": str(tmp_path / "none.pem")}, tmp_path), \
            pytest.raises(FileNotFoundError, match="user_credentials"):
        security.cluster_security()
    key = user_paths(site, "alice")["key"]
    os.chmod(key, 0o644)
    try:
        with as_user("alice"), pytest.raises(PermissionError, match="chmod 600"):
            security.cluster_security()
    finally:
        os.chmod(key, 0o600)


def test_dask_worker_with_preload_binds_its_process(site, as_user, tmp_path):
    """A stock `dask worker` with the preload joins alice's cluster and refuses bob's client."""
    alice = user_paths(site, "alice")
    site_file = tmp_path / "worker-site.yaml"
    site_file.write_text(yaml.safe_dump({"daskhpc": {"tls": alice}}))
    # The preload binds to the user running the worker and reads the CRL path from the site file; no
    # setting can change either, so this test (running as root) stands in for alice by patching both.
    as_alice = ("import sys, daskhpc.config as c, daskhpc.security as s; c.SITE_FILE = %r; c.SITE_FILE_OWNER = %d; "
                "s.current_user = lambda: 'alice'; from distributed.cli.dask_worker import main; main()"
                % (str(site_file), os.geteuid()))

    async def scenario():
        with as_user("alice"):
            sec = security.cluster_security(owner="alice")
        with as_user("bob"):
            bob_plain = Security(require_encryption=True, tls_ca_file=site["bundle"],
                                 tls_client_cert=user_paths(site, "bob")["cert"],
                                 tls_client_key=user_paths(site, "bob")["key"])
        async with Scheduler(security=sec, protocol="tls", dashboard_address=None) as s:
            proc = subprocess.Popen(
                [sys.executable, "-c", as_alice, s.address, "--nthreads", "1", "--no-nanny",
                 "--no-dashboard", "--tls-ca-file", alice["ca"], "--tls-cert", alice["cert"], "--tls-key",
                 alice["key"], "--preload", "daskhpc.worker_preload"])
            try:
                for _attempt in range(120):
                    if s.workers:
                        break
                    await asyncio.sleep(0.5)
                assert len(s.workers) == 1
                worker_address = next(iter(s.workers))
                # bob talks to the worker directly: the worker's own listener refuses him
                from distributed.core import rpc

                async with rpc(worker_address, connection_args=bob_plain.get_connection_args("client")) as r:
                    with pytest.raises((OSError, asyncio.TimeoutError)):
                        await asyncio.wait_for(r.identity(), 10)
                assert await _client_can_compute(s.address, sec) == 42
            finally:
                proc.terminate()
                proc.wait(30)
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        run(scenario())
