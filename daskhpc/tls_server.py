"""HTTPS for the site's small services (discovery, exporter): mutual TLS with site service certificates.

- ``TLSFiles``: the server's context from its certificate, key, the site bundle and CRL, rebuilt when
  any of them changes on disk (a renewed certificate or a new CRL needs no restart).
- ``MutualTLSServer``: a threading socketserver whose TLS handshake runs in the connection's own
  thread under a timeout, so a slow or silent peer blocks nobody; connections beyond a bound are
  dropped; and only a peer presenting a site *service* certificate that names one of the allowed
  hosts (Prometheus's) is served. Users' and hosts' certificates from the same CA are refused.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import ssl
import threading

from daskhpc.identity import is_service

log = logging.getLogger("daskhpc.tls_server")


class TLSFiles:
    """The server's TLS context, rebuilt when the certificate, key, CA bundle or CRL change on disk."""

    def __init__(self, cert, key, ca, crl=None):
        self.cert, self.key, self.ca, self.crl = cert, key, ca, crl
        self._stamp = None
        self._context = None
        self._lock = threading.Lock()

    def _files_stamp(self):
        stamp = []
        for path in (self.cert, self.key, self.ca, self.crl):
            try:
                st = os.stat(path) if path else None
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino) if st else None)
            except FileNotFoundError:
                stamp.append(None)
        return tuple(stamp)

    def context(self):
        with self._lock:
            stamp = self._files_stamp()
            if stamp != self._stamp:
                self._context = self.build()
                self._stamp = stamp
            return self._context

    def build(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        # No client certificate from the site CA, no handshake. OpenSSL checks the client's
        # extended key usage (clientAuth) when the server verifies it.
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=self.ca)
        if self.crl and os.path.exists(self.crl):
            ctx.load_verify_locations(cafile=self.crl)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return ctx


class MutualTLSServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Serves ``handler`` over mutual TLS to site service certificates naming one of ``allowed``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, tls, allowed, *, max_connections=16, timeout=10):
        self.tls = tls
        self.allowed = set(allowed)
        self.connection_timeout = timeout
        self.slots = threading.BoundedSemaphore(max_connections)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request, client_address):
        request.settimeout(self.connection_timeout)
        try:
            tls = self.tls.context().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("refused %s: %s", client_address[0], exc)
            return
        try:
            der = tls.getpeercert(binary_form=True)
            if not (der and is_service(der, self.allowed)):
                log.warning("refused %s: its certificate is not a site service certificate of %s",
                            client_address[0], ", ".join(sorted(self.allowed)))
                return
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError) as exc:
            log.info("connection from %s failed: %s", client_address[0], exc)
        finally:
            tls.close()
