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
Where a CRL is present (``/etc/daskhpc/tls/crl.pem``), it is loaded and the leaf is
checked against it (``VERIFY_CRL_CHECK_LEAF``).

Use ``cluster_security()`` for the scheduler and client (``BurstCluster`` does). Worker
processes started by ``dask worker`` build a plain ``Security`` from their command line,
so they load the preload module ``daskhpc.worker_preload``, which binds every TLS context
of the process to the process's user (see docs/pki.md).
"""

from __future__ import annotations

import datetime
import logging
import os
import pwd
import ssl
import stat

import dask
from distributed import Security

logger = logging.getLogger("daskhpc.security")

USER_OU = "users"  # what the site CA puts in every user credential (plugins/module_utils/pki.py)
DEFAULT_TLS = {
    "ca": "/etc/daskhpc/tls/ca.pem",
    "cert": "~/.daskhpc/tls/user.pem",
    "key": "~/.daskhpc/tls/user.key",
    "crl": "/etc/daskhpc/tls/crl.pem",
}


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
    """The user's credential, the site bundle and the CRL, from Dask config ``daskhpc.tls``."""
    configured = dask.config.get("daskhpc.tls", default=None)
    configured = configured if isinstance(configured, dict) else {}
    return {key: os.path.expanduser(os.path.expandvars(configured.get(key) or default))
            for key, default in DEFAULT_TLS.items()}


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
    """Mixed into SSLSocket/SSLObject: after the handshake, the peer must be the owner."""

    daskhpc_owner = None

    def do_handshake(self, *args, **kwargs):
        super().do_handshake(*args, **kwargs)
        check_peer(self.getpeercert(), self.daskhpc_owner)


_CLASSES = {}


def _owner_classes(owner):
    if owner not in _CLASSES:
        attrs = {"daskhpc_owner": owner, "__module__": __name__}
        _CLASSES[owner] = (type("OwnerBoundSSLSocket", (_OwnerCheck, ssl.SSLSocket), attrs),
                           type("OwnerBoundSSLObject", (_OwnerCheck, ssl.SSLObject), attrs))
    return _CLASSES[owner]


def load_crl(ctx, crl_file, now=None):
    """Check the leaf against the CRL when there is one. An expired CRL is an error, not a silent skip."""
    if not crl_file or not os.path.exists(crl_file):
        return False
    from cryptography import x509  # only needed when a CRL is there

    with open(crl_file, "rb") as handle:
        crl = x509.load_pem_x509_crl(handle.read())
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if crl.next_update_utc is not None and crl.next_update_utc < now:
        raise ssl.SSLError(
            "the CRL %s expired on %s, so no certificate can be checked. Fix: ask the site's PKI admin to run "
            "playbooks/pki.yml (it re-signs and distributes the CRL)" % (crl_file, crl.next_update_utc))
    ctx.load_verify_locations(cafile=crl_file)
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return True


def bind_context(ctx, owner, crl_file=None):
    """Bind an SSLContext to ``owner``: sockets it creates refuse any other peer. Idempotent."""
    if getattr(ctx, "daskhpc_owner", None) == owner:
        return ctx
    if getattr(ctx, "daskhpc_owner", None) is not None:
        raise ValueError("TLS context is already bound to %s, not %s" % (ctx.daskhpc_owner, owner))
    ctx.sslsocket_class, ctx.sslobject_class = _owner_classes(owner)
    ctx.daskhpc_crl = load_crl(ctx, crl_file)
    ctx.daskhpc_owner = owner
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


def cluster_security(owner=None):
    """Mutual TLS with the user's site credential, bound to ``owner`` (default: the current user).

    The scheduler, the client and workers created in this process all present the user's
    certificate, trust the site bundle, and refuse any peer whose certificate is not
    ``owner``'s, even when the site CA signed it.
    """
    paths = tls_paths()
    _check_credential(paths)
    return IdentitySecurity(
        owner=owner,
        crl_file=paths["crl"],
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
