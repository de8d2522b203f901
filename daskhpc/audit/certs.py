# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificate inventory: the CA's issuance ledger and the certificate files found on hosts."""

from __future__ import annotations

from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

# Serials in the CA's one format (upper-case hex), as the ledger's reader (pki.parse_ledger) keys them.
from daskhpc.core.pki import ledger_serial

EXPIRING_DAYS = 30
MIN_RSA_BITS = 2048
WEAK_HASHES = ("md5", "sha1")


def parse_time(value):
    """An ISO 8601 time (``Z`` allowed) as an aware UTC datetime; None when empty or unparsable."""
    if not value:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def iso(moment):
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def key_weakness(key_type, bits, sig_hash):
    reasons = []
    if key_type == "rsa" and bits and bits < MIN_RSA_BITS:
        reasons.append("RSA key of %d bits (< %d)" % (bits, MIN_RSA_BITS))
    if key_type == "dsa":
        reasons.append("DSA key")
    if sig_hash and sig_hash.lower() in WEAK_HASHES:
        reasons.append("%s signature" % sig_hash.upper().replace("SHA1", "SHA-1"))
    return "; ".join(reasons)


def _ledger_key(key_type):
    """`rsa-1024` -> ("rsa", 1024); `ecdsa-p256` -> ("ecdsa", 256); `ed25519` -> ("ed25519", 256)."""
    text = str(key_type or "").lower()
    family, _sep, size = text.partition("-")
    digits = "".join(ch for ch in size if ch.isdigit())
    if family == "ed25519":
        return "ed25519", 256
    return family, int(digits) if digits else None


def classify(not_before, not_after, revoked_at, as_of):
    if revoked_at:
        return "revoked"
    if not_after and not_after <= as_of:
        return "expired"
    if not_before and not_before > as_of:
        return "not yet valid"
    if not_after and (not_after - as_of).total_seconds() < EXPIRING_DAYS * 86400:
        return "expiring"
    return "valid"


def ledger_certificates(entries, as_of):
    rows = []
    for serial, entry in entries.items():
        family, bits = _ledger_key(entry.get("key_type"))
        not_before, not_after = parse_time(entry.get("not_before")), parse_time(entry.get("not_after"))
        revoked_at = parse_time(entry.get("revoked_at"))
        rows.append(_row(
            cid="ledger:%s" % serial, source="ledger", host="", path="", serial=serial,
            subject=entry.get("subject", ""), sans=entry.get("sans") or [], key_type=family, key_bits=bits,
            sig_hash="", not_before=not_before, not_after=not_after, revoked_at=revoked_at,
            revocation_reason=entry.get("revocation_reason") or "", profile=entry.get("profile") or "",
            requested_by=entry.get("requested_by") or "", issued_at=parse_time(entry.get("issued_at")),
            is_ca=entry.get("profile") in ("root", "intermediate", "ca"), in_ledger=True, as_of=as_of))
    return rows


def _key_info(cert):
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "dsa", key.key_size
    return type(key).__name__, None


def _sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = ["DNS:%s" % n for n in ext.get_values_for_type(x509.DNSName)]
    names += ["IP:%s" % n for n in ext.get_values_for_type(x509.IPAddress)]
    names += ["email:%s" % n for n in ext.get_values_for_type(x509.RFC822Name)]
    return sorted(names)


def _is_ca(cert):
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def file_certificates(host, files, ledger_entries, as_of):
    """Rows for every certificate in the scanned files; a bundle gives one row per certificate."""
    rows, problems = [], []
    for item in files:
        path = item.get("path", "")
        if "pem" not in item:
            problems.append("%s:%s: %s" % (host, path, item.get("error", "unreadable")))
            continue
        try:
            certs = x509.load_pem_x509_certificates(item["pem"].encode("ascii", "replace"))
        except ValueError as exc:
            problems.append("%s:%s: not a certificate (%s)" % (host, path, exc))
            continue
        for index, cert in enumerate(certs):
            serial = ledger_serial(cert.serial_number)
            entry = ledger_entries.get(serial, {})
            family, bits = _key_info(cert)
            sig = cert.signature_hash_algorithm
            rows.append(_row(
                cid="file:%s:%s#%d" % (host, path, index), source="file", host=host, path=path, serial=serial,
                subject=cert.subject.rfc4514_string(), sans=_sans(cert), key_type=family, key_bits=bits,
                sig_hash=sig.name if sig else "", not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc, revoked_at=parse_time(entry.get("revoked_at")),
                revocation_reason=entry.get("revocation_reason") or "", profile=entry.get("profile") or "",
                requested_by=entry.get("requested_by") or "", issued_at=parse_time(entry.get("issued_at")),
                is_ca=_is_ca(cert), in_ledger=bool(entry), as_of=as_of))
    return rows, problems


def _row(*, cid, source, host, path, serial, subject, sans, key_type, key_bits, sig_hash, not_before, not_after,
         revoked_at, revocation_reason, profile, requested_by, issued_at, is_ca, in_ledger, as_of):
    days_left = int((not_after - as_of).total_seconds() // 86400) if not_after else None
    return {
        "id": cid,
        "source": source,
        "host": host,
        "path": path,
        "serial": serial,
        "subject": subject,
        "sans": sorted(sans),
        "key_type": key_type,
        "key_bits": key_bits,
        "signature_hash": sig_hash,
        "is_ca": is_ca,
        "profile": profile,
        "requested_by": requested_by,
        "issued_at": iso(issued_at),
        "not_before": iso(not_before),
        "not_after": iso(not_after),
        "days_left": days_left,
        "status": classify(not_before, not_after, revoked_at, as_of),
        "revoked_at": iso(revoked_at),
        "revocation_reason": revocation_reason,
        "weak": key_weakness(key_type, key_bits, sig_hash),
        "in_ledger": in_ledger,
    }
