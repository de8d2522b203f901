"""Dask TLS bound to identity: a user's cluster talks only to that user's certificate.

distributed's TLS verifies the certificate chain and nothing else (``check_hostname``
is off, there is no identity check), so with one site CA any user's valid certificate
would open any other user's scheduler. Here every TLS context Dask uses gets one more
check, run right after the handshake: the peer's certificate must name the cluster's
owner (``CN=<uid>`` with ``OU=users``, as the site CA issues user credentials).

The hook is ``ssl.SSLContext.sslsocket_class`` (and ``sslobject_class``), a documented
Python API: the context creates sockets of a subclass whose ``do_handshake`` verifies
the peer after OpenSSL has verified the chain. A refused peer gets a failed connection,
the refusing side logs ``peer certificate CN=bob,OU=users is not the cluster owner alice``.
Where a CRL is present (``/etc/daskhpc/tls/crl.pem``), the leaf is checked against it at
every handshake, and the file is re-read whenever it changes, so a revocation reaches running
clusters without a restart (``RevocationList``).

Use ``cluster_security()`` for the scheduler and client (``BurstCluster`` does). Worker
processes started by ``dask worker`` build a plain ``Security`` from their command line,
so they load the preload module ``daskhpc.worker_preload``, which binds every TLS context
of the process to the process's user (see docs/pki.md).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import pwd
import ssl
import stat
import tempfile

from cryptography import x509
from distributed import Security

from daskhpc import config as site
from daskhpc.identity import is_service

logger = logging.getLogger("daskhpc.security")

USER_OU = "users"  # what the site CA puts in every user credential (plugins/module_utils/_core/pki.py)


class PeerNotOwnerError(ssl.SSLCertVerificationError):
    """The peer's certificate is valid but belongs to someone else."""

    def __init__(self, message):
        super().__init__(ssl.SSL_ERROR_SSL, message)
        # distributed and tornado read these on SSL errors; C-raised errors always carry them.
        self.reason = "PEER_NOT_CLUSTER_OWNER"
        self.library = "daskhpc"
        self.verify_code = 0
        self.verify_message = message


def current_user():
    return pwd.getpwuid(os.geteuid()).pw_name


def tls_paths():
    """The user's credential, the site bundle and the CRL, from the site file (never from the user's Dask config)."""
    return site.tls_paths(site.policy())


def peer_identity(peercert):
    """(CN, [OU, ...]) from ``SSLSocket.getpeercert()``'s dict."""
    cn, ous = None, []
    for rdn in (peercert or {}).get("subject", ()):
        for field, value in rdn:
            if field == "commonName":
                cn = value
            elif field == "organizationalUnitName":
                ous.append(value)
    return cn, ous


def check_peer(peercert, owner):
    """Raise PeerNotOwnerError unless the (already chain-verified) peer certificate is ``owner``'s."""
    cn, ous = peer_identity(peercert)
    if cn != owner or USER_OU not in ous:
        shown = ",".join(["CN=%s" % cn] + ["OU=%s" % ou for ou in ous]) if peercert else "no certificate"
        raise PeerNotOwnerError("peer certificate %s is not the cluster owner %s" % (shown, owner))


class _OwnerCheck:
    """Mixed into SSLSocket/SSLObject: after the handshake, the peer must be the owner (or one of the site
    services let in, e.g. Prometheus on a scheduler's /metrics) and not revoked."""

    daskhpc_owner = None
    daskhpc_services = frozenset()

    def do_handshake(self, *args, **kwargs):
        super().do_handshake(*args, **kwargs)
        der = self.getpeercert(binary_form=True)
        if not (self.daskhpc_services and der and is_service(der, self.daskhpc_services)):
            check_peer(self.getpeercert(), self.daskhpc_owner)
        revocations = getattr(self.context, "daskhpc_crl", None)
        if revocations is not None:
            revocations.check(der)


_CLASSES = {}


def _owner_classes(owner, services=frozenset()):
    key = (owner, services)
    if key not in _CLASSES:
        attrs = {"daskhpc_owner": owner, "daskhpc_services": services, "__module__": __name__}
        _CLASSES[key] = (type("OwnerBoundSSLSocket", (_OwnerCheck, ssl.SSLSocket), attrs),
                         type("OwnerBoundSSLObject", (_OwnerCheck, ssl.SSLObject), attrs))
    return _CLASSES[key]


class CrlError(ssl.SSLCertVerificationError):
    """The peer is revoked, or the CRL cannot be used (gone, expired, not the site CA's): nobody is let in."""

    def __init__(self, message):
        super().__init__(ssl.SSL_ERROR_SSL, message)
        self.reason = "CRL_CHECK_FAILED"
        self.library = "daskhpc"
        self.verify_code = 0
        self.verify_message = message


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


class RevocationList:
    """The site CRL as it is on disk now, checked at every TLS handshake.

    OpenSSL reads a CRL once, when a context is made, so a cluster running for days would never see a
    new revocation. This object compares the file's inode, size and mtime at every handshake and
    re-reads it when they changed: a revocation applies to every new connection as soon as the new
    ``crl.pem`` is on the host. A CRL that disappears, expires or is not signed by the site CA refuses
    every peer rather than none.
    """

    def __init__(self, path, issuers, now=None):
        self.path = path
        self.issuers = issuers  # x509 certificates of the site bundle
        self._state = None      # (file stamp, CRL, revoked serials), replaced in one assignment
        self.refresh(now)

    def refresh(self, now=None):
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise CrlError("the CRL %s has disappeared, so revoked certificates cannot be told apart. Fix: ask the "
                           "site's PKI admin to run playbooks/pki.yml (it distributes the CRL)" % self.path) from None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if self._state is None or self._state[0] != stamp:
            with open(self.path, "rb") as handle:
                crl = x509.load_pem_x509_crl(handle.read())
            if not any(ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key()) for ca in self.issuers):
                raise CrlError("the CRL %s is not signed by the site CA, so it cannot be trusted. Fix: ask the site's "
                               "PKI admin to run playbooks/pki.yml" % self.path)
            self._state = (stamp, crl, frozenset(entry.serial_number for entry in crl))
        crl = self._state[1]
        now = now or _utcnow()
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            raise CrlError(
                "the CRL %s expired on %s, so no certificate can be checked. Fix: ask the site's PKI admin to run "
                "playbooks/pki.yml (it re-signs and distributes the CRL)" % (self.path, crl.next_update_utc))
        return self._state

    def check(self, der):
        """Raise CrlError unless the (chain-verified) peer certificate ``der`` is covered and not revoked."""
        _stamp, crl, revoked = self.refresh()
        cert = x509.load_der_x509_certificate(der)
        if cert.issuer != crl.issuer:
            raise CrlError("peer certificate %s was issued by %s, which the CRL %s does not cover"
                           % (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), self.path))
        if cert.serial_number in revoked:
            raise CrlError("peer certificate %s (serial %X) is revoked" % (cert.subject.rfc4514_string(),
                                                                           cert.serial_number))


def load_crl(ctx, crl_file, now=None):
    """Check peers of ``ctx`` against the CRL when there is one (re-read when it changes). An expired CRL is an
    error, not a silent skip."""
    if not crl_file or not os.path.exists(crl_file):
        ctx.daskhpc_crl = None
        return False
    issuers = [x509.load_der_x509_certificate(der) for der in ctx.get_ca_certs(binary_form=True)]
    ctx.daskhpc_crl = RevocationList(crl_file, issuers, now=now)
    return True


def bind_context(ctx, owner, crl_file=None, services=()):
    """Bind an SSLContext to ``owner``: sockets it creates refuse any other peer, except site service
    certificates naming one of ``services``. Idempotent."""
    services = frozenset(services)
    bound = (getattr(ctx, "daskhpc_owner", None), getattr(ctx, "daskhpc_services", frozenset()))
    if bound == (owner, services):
        return ctx
    if bound[0] is not None:
        raise ValueError("TLS context is already bound to %s, not %s" % (bound[0], owner))
    load_crl(ctx, crl_file)
    ctx.sslsocket_class, ctx.sslobject_class = _owner_classes(owner, services)
    ctx.daskhpc_owner, ctx.daskhpc_services = owner, services
    return ctx


class IdentitySecurity(Security):
    """distributed.Security whose TLS contexts accept only ``owner``'s certificate (and check the CRL)."""

    def __init__(self, owner=None, crl_file=None, **kwargs):
        self.owner = owner or current_user()
        self.crl_file = crl_file
        super().__init__(**kwargs)

    def _get_tls_context(self, tls, purpose):
        ctx = super()._get_tls_context(tls, purpose)
        if ctx is not None:
            bind_context(ctx, self.owner, self.crl_file)
        return ctx

    def __repr__(self):
        return "IdentitySecurity(owner=%s, crl_file=%s, %s)" % (self.owner, self.crl_file,
                                                                super().__repr__()[len("Security("):-1])


def _check_credential(paths):
    for label in ("ca", "cert", "key"):
        if not os.access(paths[label], os.R_OK):
            raise FileNotFoundError(
                "TLS %s file %s is missing or unreadable. Fix: user credentials are issued by the site PKI "
                "(playbooks/user_credentials.yml) to members of the burst groups; run `daskhpc doctor`"
                % (label, paths[label]))
    mode = stat.S_IMODE(os.stat(paths["key"]).st_mode)
    if mode & 0o077:
        raise PermissionError("your TLS key %s is readable by others (mode %04o). Fix: chmod 600 %s"
                              % (paths["key"], mode, paths["key"]))


def cluster_security(owner=None, paths=None):
    """Mutual TLS with the user's site credential, bound to ``owner`` (default: the current user).

    The scheduler, the client and workers created in this process all present the user's
    certificate, trust the site bundle, and refuse any peer whose certificate is not
    ``owner``'s, even when the site CA signed it. ``paths`` (ca, cert, key, crl) default to the
    site file's.
    """
    paths = paths or tls_paths()
    _check_credential(paths)
    return IdentitySecurity(
        owner=owner,
        crl_file=paths.get("crl"),
        require_encryption=True,
        tls_ca_file=paths["ca"],
        tls_client_cert=paths["cert"], tls_client_key=paths["key"],
        tls_scheduler_cert=paths["cert"], tls_scheduler_key=paths["key"],
        tls_worker_cert=paths["cert"], tls_worker_key=paths["key"],
    )


def worker_security(tls_ca_file, tls_cert, tls_key, owner=None):
    """What a worker launcher builds from ``--tls-ca-file/--tls-cert/--tls-key`` instead of a plain Security."""
    return IdentitySecurity(owner=owner, crl_file=tls_paths()["crl"], require_encryption=True,
                            tls_ca_file=tls_ca_file, tls_worker_cert=tls_cert, tls_worker_key=tls_key)


def install_process_binding(owner=None, crl_file=None):
    """Bind every TLS context this process's Dask comms use to ``owner`` (for ``dask worker``/nanny).

    Registers a ``tls`` comm backend (distributed's comm registry) whose connector and
    listener bind the context they are given before each connection or listener, so it
    also covers contexts created before this call.
    """
    from distributed.comm import registry, tcp

    owner = owner or current_user()
    crl_file = crl_file if crl_file is not None else tls_paths()["crl"]

    class Connector(tcp.TLSConnector):
        def _get_connect_args(self, **connection_args):
            args = super()._get_connect_args(**connection_args)
            bind_context(args["ssl_options"], owner, crl_file)
            return args

    class Listener(tcp.TLSListener):
        def _get_server_args(self, **connection_args):
            args = super()._get_server_args(**connection_args)
            bind_context(args["ssl_options"], owner, crl_file)
            return args

    class Backend(tcp.TLSBackend):
        _connector_class = Connector
        _listener_class = Listener

    registry.backends["tls"] = Backend()
    logger.info("Dask TLS in this process accepts only certificates of %s", owner)
    return owner


# --- start-up self-check ----------------------------------------------------------------------------------


class SelfCheckError(RuntimeError):
    """The scheduler would let in a peer that is not the cluster's owner: the cluster must not start."""


def _stranger_credentials(directory, owner):
    """Self-made credentials no site CA signed: one forging ``owner``'s name, one for somebody else.

    Returns [(label, cert path, key path)], plus a peer without any certificate.
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    made = [("no certificate", None, None)]
    now = _utcnow()
    for label, cn in (("a self-signed certificate in your name", owner),
                      ("a self-signed certificate of another user", "daskhpc-self-check-not-%s" % owner)):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, USER_OU),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
        cert_path = os.path.join(directory, "%d.pem" % len(made))
        key_path = os.path.join(directory, "%d.key" % len(made))
        with open(cert_path, "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        made.append((label, cert_path, key_path))
    return made


async def peer_outcome(host, port, cert=None, key=None, timeout=10):
    """Connect with TLS presenting ``cert`` (or none): ``refused``, ``accepted`` or ``no answer``.

    A Dask listener speaks first once it has accepted a peer (its handshake message), so data means
    accepted; an alert, a reset or an immediate close means refused.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # this probe judges the server's behaviour, not its certificate
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    except asyncio.TimeoutError:  # before OSError: since Python 3.11 it is one
        return "no answer"
    except (ssl.SSLError, OSError, EOFError):
        return "refused"
    try:
        data = await asyncio.wait_for(reader.read(1), timeout)
        return "accepted" if data else "refused"
    except asyncio.TimeoutError:
        return "no answer"
    except (ssl.SSLError, OSError, EOFError):
        return "refused"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, OSError):
            pass


async def verify_scheduler_refuses_strangers(scheduler, owner, timeout=10):
    """Raise SelfCheckError unless ``scheduler`` refuses every TLS peer that is not ``owner``.

    Two checks, before any worker is asked for: every listener's TLS context requires a client
    certificate and is bound to ``owner`` (which refuses other users' site certificates; a live probe
    cannot show that without a CA key), and a live probe of the scheduler's address with credentials
    made here (none, a self-signed one in the owner's name, a self-signed one of another user) is
    refused each time.
    """
    from distributed.comm import parse_host_port
    from distributed.comm.addressing import parse_address

    for listener in scheduler.listeners:
        ctx = (getattr(listener, "server_args", None) or {}).get("ssl_options")
        if not isinstance(ctx, ssl.SSLContext) or ctx.verify_mode != ssl.CERT_REQUIRED \
                or getattr(ctx, "daskhpc_owner", None) != owner:
            raise SelfCheckError(
                "the scheduler's listener %s does not require a certificate bound to %s, so other users could "
                "connect; the cluster was not started. This is a fault in the installation: run `daskhpc doctor` "
                "and report it to your HPC support team" % (listener.contact_address, owner))
    scheme, location = parse_address(scheduler.address)
    host, port = parse_host_port(location)
    with tempfile.TemporaryDirectory(prefix="daskhpc-self-check-") as directory:
        for label, cert, key in _stranger_credentials(directory, owner):
            outcome = await peer_outcome(host, port, cert, key, timeout=timeout)
            if outcome != "refused":
                raise SelfCheckError(
                    "TLS self-check: a peer with %s was %s by the scheduler at %s instead of refused, so other users "
                    "could connect; the cluster was not started. Run `daskhpc doctor` and report this to your HPC "
                    "support team" % (label, outcome, scheduler.address))
    logger.debug("TLS self-check: the scheduler at %s refuses peers that are not %s", scheduler.address, owner)
