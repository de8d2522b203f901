"""Who a chain-verified certificate names, and whether the site CA issued it to a service.

Kept free of Dask so that small services (daskhpc.discovery_serve) can use it.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from daskhpc.core.pki import PROFILE_POLICIES


def certificate_identity(der):
    """(names, is_service) of a chain-verified certificate: its CN and SANs, and whether the site CA
    issued it with the service profile (user and host certificates never count as a service's)."""
    cert = x509.load_der_x509_certificate(der)
    names = {attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= {str(value) for value in sans.get_values_for_type(x509.DNSName)}
        names |= {str(value) for value in sans.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        pass
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        service = any(p.policy_identifier == PROFILE_POLICIES["service"] for p in policies)
    except x509.ExtensionNotFound:
        service = False
    return names, service


def is_service(der, allowed):
    """Whether ``der`` is a site service certificate naming one of ``allowed``."""
    names, service = certificate_identity(der)
    return service and bool(names & set(allowed))
