"""Identity-bound TLS as a hostile peer sees it: revocation reaches running clusters, and a scheduler that would
let strangers in never starts. A real site CA is made with the collection's own code (no lab needed)."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import ssl
from types import SimpleNamespace

import dask
import pytest
from client_helpers import USER, lab_config, make_pki, revoke, site_file, tls_section
from distributed import Scheduler
from distributed.core import rpc

from daskhpc import security
from daskhpc.cluster.base import BurstCluster
from daskhpc.security import CrlError, IdentitySecurity, SelfCheckError, cluster_security, peer_outcome

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki", users=(USER,))


def paths(pki, user=USER):
    return {"ca": pki["ca"], "crl": pki["crl"], "cert": pki[user]["cert"], "key": pki[user]["key"]}


def without_crl(pki):
    """The user's credential with no CRL check on this side, so that only the other side can refuse."""
    return IdentitySecurity(crl_file=None, require_encryption=True, tls_ca_file=pki["ca"],
                            tls_client_cert=pki[USER]["cert"], tls_client_key=pki[USER]["key"])


async def connects(address, sec):
    try:
        async with rpc(address, connection_args=sec.get_connection_args("client")) as remote:
            await asyncio.wait_for(remote.identity(), 10)
        return True
    except (OSError, asyncio.TimeoutError):
        return False


# --- revocation reaches running clusters --------------------------------------------------------------


def test_a_certificate_revoked_after_the_cluster_started_is_refused(pki):
    """The scheduler's security is made, the scheduler listens; then the credential is revoked (pki.yml
    re-signs crl.pem in place). The very next connection is refused, without restarting anything."""
    sec = cluster_security(paths=paths(pki))

    async def scenario():
        async with Scheduler(security=sec, protocol="tls", dashboard_address=None, host="127.0.0.1") as scheduler:
            assert await connects(scheduler.address, without_crl(pki))
            revoke(pki, USER)
            assert not await connects(scheduler.address, without_crl(pki))  # no sleep: at once
            assert not await connects(scheduler.address, sec)               # this side refuses the scheduler too

    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        asyncio.run(scenario())


def test_revocation_list_follows_the_file(pki):
    ctx = sec_context(pki)
    revocations = ctx.daskhpc_crl
    der = certificate_der(pki)
    revocations.check(der)
    revoke(pki, USER)
    with pytest.raises(CrlError, match="is revoked"):
        revocations.check(der)


def sec_context(pki):
    return cluster_security(paths=paths(pki)).get_listen_args("scheduler")["ssl_context"]


def certificate_der(pki):
    with open(pki[USER]["cert"], "rb") as handle:
        return ssl.PEM_cert_to_DER_cert(handle.read().decode().split("-----END CERTIFICATE-----")[0]
                                        + "-----END CERTIFICATE-----\n")


def test_a_crl_that_expires_disappears_or_is_forged_refuses_everyone(pki, tmp_path):
    ctx = sec_context(pki)
    revocations, der = ctx.daskhpc_crl, certificate_der(pki)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    with pytest.raises(CrlError, match="CRL .* expired .* playbooks/pki.yml"):
        revocations.refresh(now=later)
    forger = make_pki(tmp_path / "forger", users=())
    shutil.copy(forger["crl"], pki["crl"])  # an empty CRL from another CA
    with pytest.raises(CrlError, match="not signed by the site CA"):
        revocations.check(der)
    os.unlink(pki["crl"])
    with pytest.raises(CrlError, match="has disappeared"):
        revocations.check(der)


def test_an_expired_crl_is_a_clear_error_at_start(pki):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    with pytest.raises(ssl.SSLError, match="CRL .* expired"):
        security.load_crl(ctx, pki["crl"], now=later)


# --- the scheduler proves at start that it refuses strangers -----------------------------------------------


@pytest.fixture
def tls_site(pki, tmp_path):
    with site_file(tmp_path / "site", lab_config(interface=None, tls=tls_section(pki))):
        yield pki


def test_tls_cluster_starts_with_identity_bound_tls(tls_site):
    with BurstCluster(progress=False, scheduler_options={"host": "127.0.0.1"}) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        assert isinstance(cluster.security, IdentitySecurity) and cluster.security.owner == USER
        assert "--tls-cert %s" % tls_site[USER]["cert"] in cluster.job_script()


def test_a_scheduler_that_does_not_bind_identity_never_starts(tls_site, monkeypatch):
    """A regression that left the scheduler with chain-only (or optional) client certificates is caught."""
    from distributed import Security

    def chain_only(self, tls, purpose):
        ctx = Security._get_tls_context(self, tls, purpose)
        if ctx is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    monkeypatch.setattr(IdentitySecurity, "_get_tls_context", chain_only)
    with pytest.raises(SelfCheckError, match="does not require a certificate bound to %s" % USER):
        BurstCluster(progress=False, scheduler_options={"host": "127.0.0.1"})


def test_probes_are_refused_by_the_real_scheduler_and_the_users_own_credential_is_not(pki):
    """The probe can tell the two apart: it is not a check that always passes."""
    sec = cluster_security(paths=paths(pki))

    async def scenario(directory):
        async with Scheduler(security=sec, protocol="tls", dashboard_address=None, host="127.0.0.1") as scheduler:
            host, port = scheduler.address[len("tls://"):].rsplit(":", 1)
            for _label, cert, key in security._stranger_credentials(directory, USER):
                assert await peer_outcome(host, int(port), cert, key, timeout=5) == "refused"
            assert await peer_outcome(host, int(port), pki[USER]["cert"], pki[USER]["key"], timeout=5) == "accepted"
            await security.verify_scheduler_refuses_strangers(scheduler, USER)

    asyncio.run(scenario(pki["ca_dir"]))


def test_self_check_fails_when_the_listener_lets_anyone_in(pki):
    """A listener that claims to be bound (its context looks right) but accepts any peer is caught by the live
    probe."""
    bound = sec_context(pki)  # bound to USER, client certificate required: the structure looks fine

    async def permissive(reader, writer):
        writer.write(b"welcome")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def scenario():
        anyone = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        anyone.load_cert_chain(pki[USER]["cert"], pki[USER]["key"])
        server = await asyncio.start_server(permissive, "127.0.0.1", 0, ssl=anyone)
        port = server.sockets[0].getsockname()[1]
        fake = SimpleNamespace(address="tls://127.0.0.1:%d" % port,
                               listeners=[SimpleNamespace(server_args={"ssl_options": bound},
                                                          contact_address="tls://127.0.0.1:%d" % port)])
        try:
            with pytest.raises(SelfCheckError, match="was accepted by the scheduler"):
                await security.verify_scheduler_refuses_strangers(fake, USER, timeout=5)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
