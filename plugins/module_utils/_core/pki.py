# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site's internal CA: keys, CA creation, leaf issuance, ledger and CRL.

Pure Python on ``cryptography`` (no openssl binary, no Ansible imports), so the
modules, the ``daskhpc`` package and the tests share it unchanged.

Layout of a CA directory (``ca.dir`` in the site model)::

    root.pem          self-signed root certificate
    root.key          root key, encrypted with the CA passphrase (may be kept offline)
    intermediate.pem  issuing intermediate, signed by the root
    intermediate.key  issuing key, encrypted with the CA passphrase
    ca.pem            site bundle: root + intermediate
    crl.pem           CRL signed by the intermediate
    ledger.jsonl      append-only issuance ledger (JSON lines)
"""

from __future__ import annotations

import datetime
import fcntl
import getpass
import grp
import hashlib
import ipaddress
import json
import os
import pwd
import re
import traceback

# Optional at import time so that Ansible can read the modules' argument specs (ansible-doc, sanity tests)
# on a Python without it; the modules fail with missing_required_lib when HAS_CRYPTOGRAPHY is false.
try:
    import cryptography
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

from .safepath import PathRefused, open_dir

KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096")
PROFILES = ("host", "service", "user")
# The profile is recorded in the certificate as a policy OID so a profile change is visible even where
# two profiles share their key usages. The arc is 2.25.<random number>, kept below 2**31: Go before 1.22
# (Debian 12's Prometheus) refuses any certificate whose policy OID has a larger arc ("x509: invalid
# certificate policies"), so a 128-bit UUID arc would keep Prometheus from using or trusting our certificates.
PROFILE_ARC = "2.25.576294205"
PROFILE_POLICIES = ({name: x509.ObjectIdentifier("%s.%d" % (PROFILE_ARC, i)) for i, name in enumerate(PROFILES, 1)}
                    if HAS_CRYPTOGRAPHY else {})
USER_OU = "users"
# The reasons a revocation may give: names of x509.ReasonFlags members (the crl module's choices).
REVOCATION_REASONS = ("unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
                      "cessation_of_operation", "certificate_hold", "privilege_withdrawn")
# Subject fields a request may set, in the order they appear in a name, with their NameOID attribute.
SUBJECT_FIELDS = {
    "C": "COUNTRY_NAME",
    "ST": "STATE_OR_PROVINCE_NAME",
    "L": "LOCALITY_NAME",
    "O": "ORGANIZATION_NAME",
    "OU": "ORGANIZATIONAL_UNIT_NAME",
    "CN": "COMMON_NAME",
}
CA_FILES = {
    "root_cert": "root.pem",
    "root_key": "root.key",
    "cert": "intermediate.pem",
    "key": "intermediate.key",
    "bundle": "ca.pem",
    "crl": "crl.pem",
    "ledger": "ledger.jsonl",
}
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


class PkiError(Exception):
    """An error a person can act on: what went wrong, and the fix."""

    def __init__(self, problem, fix):
        self.problem = problem
        self.fix = fix
        super().__init__("%s. Fix: %s" % (problem, fix))


def require_cryptography():
    """The *_utc datetime accessors this code uses arrived in cryptography 42."""
    major = int(cryptography.__version__.split(".")[0])
    if major < 42:
        raise PkiError("cryptography %s is too old for the CA (42 or newer is needed; Debian 12 ships 38)"
                       % cryptography.__version__,
                       "install a newer cryptography with pip into the Python Ansible uses on the CA host "
                       "(ansible_python_interpreter)")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def isoformat(when):
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def serial_hex(serial):
    """Serials as upper-case hex, as `openssl x509 -serial` prints them."""
    return "%X" % serial


def ledger_serial(value):
    """The one serial format of the ledger and of everything that reads it: upper-case hex, no separators,
    no leading zeros (``0x0a:bc``, ``0ABC`` and 2748 are all ``ABC``). ValueError when it is not a serial."""
    if isinstance(value, int) and not isinstance(value, bool):
        return serial_hex(value)
    text = str(value if value is not None else "").strip().replace(":", "").upper()
    if text.startswith("0X"):
        text = text[2:]
    if not re.fullmatch(r"[0-9A-F]+", text):
        raise ValueError("serial %r is not hexadecimal" % (value,))
    return serial_hex(int(text, 16))


# --- keys ----------------------------------------------------------------------


def generate_key(key_type):
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("rsa-") and key_type in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise PkiError("key type %r is not supported" % (key_type,), "use one of: %s" % ", ".join(KEY_TYPES))


def key_type_of(key):
    """The KEY_TYPES name of a private or public key (None if unsupported)."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(key.curve.name)
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa-%d" % key.key_size
    return None


def key_to_pem(key, passphrase=None):
    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_key(data, passphrase=None, what="private key"):
    """Load a PEM key; wrong or missing passphrases give a PkiError naming the file."""
    try:
        return serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError as exc:
        if "not encrypted" in str(exc):
            return serialization.load_pem_private_key(data, None)
        raise PkiError("%s is encrypted and no passphrase was given" % what,
                       "pass the CA passphrase (ca_passphrase, from the vault)") from exc
    except ValueError as exc:
        if passphrase and ("decrypt" in str(exc).lower() or "password" in str(exc).lower()):
            raise PkiError("wrong passphrase for %s" % what,
                           "pass the passphrase the CA was created with (check the vault variable)") from exc
        raise PkiError("%s is not a readable PEM private key (%s)" % (what, exc),
                       "restore it from backup or remove it to have a new key generated") from exc


def _sign_algorithm(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def public_key_bytes(key):
    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- names ---------------------------------------------------------------------


def build_name(subject):
    """x509.Name from a mapping such as ``{"CN": "alice", "OU": "users"}`` (fixed order C..CN)."""
    if isinstance(subject, str):
        subject = dict(part.split("=", 1) for part in subject.split(",") if "=" in part)
    if not isinstance(subject, dict) or not subject.get("CN"):
        raise PkiError("subject %r has no CN" % (subject,),
                       "give subject as a mapping with at least CN, e.g. {CN: alice}")
    unknown = set(subject) - set(SUBJECT_FIELDS)
    if unknown:
        raise PkiError("subject fields %s are not supported" % ", ".join(sorted(unknown)),
                       "use only: %s" % ", ".join(SUBJECT_FIELDS))
    return x509.Name([x509.NameAttribute(getattr(NameOID, oid_name), str(subject[field]))
                      for field, oid_name in SUBJECT_FIELDS.items() if subject.get(field)])


def _valid_dns(name):
    labels = name.rstrip(".").split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    return bool(labels) and len(name) <= 253 and all(_DNS_LABEL.match(label) for label in labels)


def parse_san(value):
    """One SAN from ``DNS:name``, ``IP:addr`` or a bare name/address."""
    text = str(value).strip()
    kind, sep, rest = text.partition(":")
    if sep and kind.upper() in ("DNS", "IP"):
        kind, text = kind.upper(), rest.strip()
    else:
        kind = None
    if kind in (None, "IP"):
        try:
            return x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            if kind == "IP":
                raise PkiError("SAN %r is not a valid IP address" % (value,),
                               "write IP:192.0.2.10 or IP:2001:db8::1") from None
    if _valid_dns(text):
        return x509.DNSName(text.lower())
    raise PkiError("SAN %r is not a valid DNS name or IP address" % (value,),
                   "use DNS:host.example.org (letters, digits, '-', dots; '*.' only as the first label) "
                   "or IP:192.0.2.10")


def parse_sans(values):
    return [parse_san(v) for v in (values or [])]


def san_strings(names):
    out = []
    for name in names:
        if isinstance(name, x509.IPAddress):
            out.append("IP:%s" % name.value)
        elif isinstance(name, x509.DNSName):
            out.append("DNS:%s" % name.value)
        else:
            out.append(str(name.value))
    return sorted(out)


def cert_sans(cert):
    try:
        return san_strings(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _common_name(name):
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return values[0].value if values else None


# --- files -----------------------------------------------------------------------


def atomic_write(path, data, *, mode=0o644, uid=None, gid=None, backup=False, fsync=True):
    """Write the CA's own files (root's, in root's directories) through safepath, never half-written."""
    with open_dir(os.path.dirname(os.path.abspath(path))) as directory:
        return directory.write(os.path.basename(path), data, mode, uid=uid, gid=gid, fsync=fsync, backup=backup)


def read_file(path):
    """One of the CA's own files (root's, in root's directory); users' files go through safepath."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def cert_to_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certs(data):
    return x509.load_pem_x509_certificates(data)


# --- the CA ----------------------------------------------------------------------


def _ca_extensions(builder, public_key, issuer_key, path_length):
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
        critical=True)
    builder = builder.add_extension(ski, critical=False)
    return builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)


def make_root(name, key, days, now=None):
    now = now or utcnow()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "%s Root" % name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days)))
    builder = _ca_extensions(builder, key.public_key(), key, path_length=1)
    return builder.sign(key, _sign_algorithm(key))


def make_intermediate(name, key, root_cert, root_key, *, days, now=None):
    now = now or utcnow()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "%s Issuing CA" % name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    not_after = min(now + datetime.timedelta(days=days), root_cert.not_valid_after_utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(root_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after))
    builder = _ca_extensions(builder, key.public_key(), root_key, path_length=0)
    return builder.sign(root_key, _sign_algorithm(root_key))


def signed_by(cert, issuer_cert):
    """True if ``cert`` carries a valid signature by ``issuer_cert``'s key."""
    if cert.issuer != issuer_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer_cert)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def ca_paths(ca_dir):
    return {k: os.path.join(ca_dir, v) for k, v in CA_FILES.items()}


def plan_ca(ca_dir, name, passphrase, intermediate_renew_before_days=90, now=None):
    """What ensure_ca would do, as a list of (action, reason); raises PkiError on problems."""
    now = now or utcnow()
    paths = ca_paths(ca_dir)
    actions = []
    root_pem, root_key_pem = read_file(paths["root_cert"]), read_file(paths["root_key"])
    int_pem, int_key_pem = read_file(paths["cert"]), read_file(paths["key"])
    if root_key_pem is not None:
        load_key(root_key_pem, passphrase, "the root key %s" % paths["root_key"])
    if int_key_pem is not None:
        load_key(int_key_pem, passphrase, "the issuing key %s" % paths["key"])
    if root_pem is None:
        if int_pem is not None and root_key_pem is None:
            raise PkiError("%s is missing but an intermediate exists" % paths["root_cert"],
                           "restore root.pem and root.key from the offline copy")
        actions.append(("root", "no root certificate"))
        actions.append(("intermediate", "new root"))
    else:
        root = load_certs(root_pem)[0]
        expected_cn = "%s Root" % name
        if _common_name(root.subject) != expected_cn:
            raise PkiError("the CA in %s is %r, not %r" % (ca_dir, _common_name(root.subject), expected_cn),
                           "a CA cannot be renamed: keep ca.name, or use a new ca.dir for a new CA")
        if root.not_valid_after_utc <= now:
            raise PkiError("the root CA in %s expired on %s" % (ca_dir, isoformat(root.not_valid_after_utc)),
                           "create a new CA in a new ca.dir and roll its bundle out with pki_client")
        if int_pem is None or int_key_pem is None:
            actions.append(("intermediate", "no issuing intermediate"))
        else:
            inter = load_certs(int_pem)[0]
            if not signed_by(inter, root):
                actions.append(("intermediate", "intermediate is not signed by the root"))
            elif inter.not_valid_after_utc - now <= datetime.timedelta(days=intermediate_renew_before_days):
                actions.append(("intermediate", "intermediate expires on %s" % isoformat(inter.not_valid_after_utc)))
        if actions and root_key_pem is None:
            raise PkiError("the root key %s is missing (kept offline?) and is needed: %s"
                           % (paths["root_key"], actions[0][1]),
                           "bring root.key back from its offline copy for this run, then remove it again")
    bundle = read_file(paths["bundle"])
    if not actions and (bundle is None or bundle != root_pem + int_pem):
        actions.append(("bundle", "site bundle ca.pem is missing or stale"))
    return actions


def ensure_ca(ca_dir, name, passphrase, *, key_type="ecdsa-p256", root_days=3650, intermediate_days=1095,
              intermediate_renew_before_days=90, check_mode=False, now=None):
    """Create or renew the root and issuing intermediate. Returns (actions, summary)."""
    if not passphrase or len(passphrase) < 12:
        raise PkiError("the CA passphrase is missing or shorter than 12 characters",
                       "set a long passphrase in the vault (e.g. daskhpc_ca_passphrase)")
    require_cryptography()
    now = now or utcnow()
    paths = ca_paths(ca_dir)
    actions = plan_ca(ca_dir, name, passphrase, intermediate_renew_before_days, now)
    if actions and not check_mode:
        open_dir(ca_dir, create=True, mode=0o700).close()
        kinds = {a for a, _detail in actions}
        if "root" in kinds:
            root_key = generate_key(key_type)
            root = make_root(name, root_key, root_days, now)
            # Write the key first: a root certificate without its key would be useless.
            atomic_write(paths["root_key"], key_to_pem(root_key, passphrase), mode=0o600, backup=True)
            atomic_write(paths["root_cert"], cert_to_pem(root), mode=0o644, backup=True)
        else:
            root = load_certs(read_file(paths["root_cert"]))[0]
            root_key = load_key(read_file(paths["root_key"]), passphrase, "the root key")
        if "intermediate" in kinds:
            # Keep the issuing key when there is one: leaves it signed stay valid under the re-signed cert.
            existing = read_file(paths["key"])
            int_key = load_key(existing, passphrase, "the issuing key") if existing and "root" not in kinds \
                else generate_key(key_type)
            inter = make_intermediate(name, int_key, root, root_key, days=intermediate_days, now=now)
            if existing is None or "root" in kinds:
                atomic_write(paths["key"], key_to_pem(int_key, passphrase), mode=0o600, backup=True)
            atomic_write(paths["cert"], cert_to_pem(inter), mode=0o644, backup=True)
        atomic_write(paths["bundle"], read_file(paths["root_cert"]) + read_file(paths["cert"]), mode=0o644)
    return actions, ca_summary(ca_dir)


def ca_summary(ca_dir):
    paths = ca_paths(ca_dir)
    out = {"ca_dir": ca_dir, "bundle": paths["bundle"]}
    for label, key in (("root", "root_cert"), ("intermediate", "cert")):
        data = read_file(paths[key])
        if data:
            cert = load_certs(data)[0]
            out[label] = {"subject": cert.subject.rfc4514_string(), "serial": serial_hex(cert.serial_number),
                          "not_after": isoformat(cert.not_valid_after_utc)}
    out["root_key_present"] = os.path.exists(paths["root_key"])
    return out


class IssuingCA:
    """The loaded issuing intermediate: what every leaf is signed with."""

    def __init__(self, ca_dir, passphrase, now=None):
        require_cryptography()
        self.ca_dir = ca_dir
        self.paths = ca_paths(ca_dir)
        now = now or utcnow()
        cert_pem, key_pem = read_file(self.paths["cert"]), read_file(self.paths["key"])
        if cert_pem is None or key_pem is None:
            raise PkiError("the issuing CA in %s is missing (%s)"
                           % (ca_dir, "intermediate.key" if cert_pem else "intermediate.pem"),
                           "create the CA first (role onprem.daskhpc.ca / module onprem.daskhpc.ca) "
                           "or restore the CA directory from backup")
        self.cert = load_certs(cert_pem)[0]
        self.cert_pem = cert_to_pem(self.cert)
        self.key = load_key(key_pem, passphrase, "the issuing key %s" % self.paths["key"])
        if public_key_bytes(self.key) != public_key_bytes(self.cert.public_key()):
            raise PkiError("intermediate.key does not match intermediate.pem in %s" % ca_dir,
                           "restore the matching pair from backup")
        if self.cert.not_valid_after_utc <= now:
            raise PkiError("the issuing CA in %s expired on %s" % (ca_dir, isoformat(self.cert.not_valid_after_utc)),
                           "renew it: run onprem.daskhpc.ca (needs the root key) and re-run issuance")
        self.ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self._hash = _sign_algorithm(self.key)

    def sign(self, public_key, subject, sans, *, profile, days, now=None):
        now = now or utcnow()
        not_after = now + datetime.timedelta(days=days)
        not_after = min(not_after, self.cert.not_valid_after_utc)  # a leaf never outlives its issuer
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        rsa_key = isinstance(public_key, rsa.RSAPublicKey)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=rsa_key, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage(profile_ekus(profile)), critical=False)
        builder = builder.add_extension(x509.CertificatePolicies(
            [x509.PolicyInformation(PROFILE_POLICIES[profile], None)]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.ski), critical=False)
        return builder.sign(self.key, self._hash)


def profile_ekus(profile):
    if profile == "user":
        # A user's certificate also serves that user's own Dask scheduler.
        return [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    return [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def _cert_profile_ok(cert, profile):
    try:
        ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        policies = {p.policy_identifier for p in policies}
    except x509.ExtensionNotFound:
        return False
    return ekus == set(profile_ekus(profile)) and not bc.ca and policies == {PROFILE_POLICIES[profile]}


# --- leaf requests ------------------------------------------------------------------


def normalise_request(req, defaults=None):
    """Validate one certificate request (module options or a batch item); return it completed."""
    merged = dict(defaults or {})
    merged.update({k: v for k, v in req.items() if v is not None})
    label = merged.get("path") or "certificate"
    if not merged.get("path"):
        raise PkiError("a certificate request has no path", "give path (the certificate file)")
    merged.setdefault("privatekey_path", re.sub(r"\.(pem|crt)$", "", merged["path"]) + ".key")
    profile = merged.setdefault("profile", "host")
    if profile not in PROFILES:
        raise PkiError("%s: profile %r is not known" % (label, profile), "use one of: %s" % ", ".join(PROFILES))
    subject = merged.get("subject")
    if isinstance(subject, str):
        subject = {"CN": subject}
    if not isinstance(subject, dict) or not subject.get("CN"):
        raise PkiError("%s: subject has no CN" % label, "give subject: {CN: <name>}")
    subject = dict(subject)
    if profile == "user":
        if subject.get("OU", USER_OU) != USER_OU:
            raise PkiError("%s: user certificates carry OU=%s, not %r" % (label, USER_OU, subject["OU"]),
                           "leave OU out of user subjects")
        subject["OU"] = USER_OU  # the identity check in daskhpc.security looks for it
    merged["subject"] = subject
    merged["subject_name"] = build_name(subject)
    try:
        merged["san_names"] = parse_sans(merged.get("subject_alt_names") or [])
    except PkiError as exc:
        raise PkiError("%s: %s" % (label, exc.problem), exc.fix) from None
    merged["sans"] = san_strings(merged["san_names"])
    key_type = merged.setdefault("key_type", "ecdsa-p256")
    if key_type not in KEY_TYPES:
        raise PkiError("%s: key type %r is not supported" % (label, key_type), "use one of: %s" % ", ".join(KEY_TYPES))
    if merged.get("public_key"):
        # The key was made on the host that uses it: the CA signs its public half and never holds a private key.
        try:
            given = serialization.load_pem_public_key(str(merged["public_key"]).encode())
        except (ValueError, TypeError):
            raise PkiError("%s: public_key is not a PEM public key" % label,
                           "give the public half of the host's key (community.crypto.openssl_publickey)") from None
        if key_type_of(given) != key_type:
            raise PkiError("%s: public_key is a %s key, not %s" % (label, key_type_of(given), key_type),
                           "make the host's key of type %s, or set key_type to match it" % key_type)
        merged["given_key"] = given
    for field in ("days", "renew_before_days"):
        value = merged.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if field == "days" else 0):
            raise PkiError("%s: %s is %r" % (label, field, value), "give a whole number of days")
    if merged["renew_before_days"] >= merged["days"]:
        raise PkiError("%s: renew_before_days (%d) is not shorter than days (%d)"
                       % (label, merged["renew_before_days"], merged["days"]),
                       "renew a few days before expiry, e.g. days: 7 and renew_before_days: 2")
    return merged


def plan_leaf(req, ca, now=None):
    """Decide whether a leaf must be (re-)issued. Returns (reasons, existing_key, existing_cert)."""
    now = now or utcnow()
    if req.get("given_key") is not None:
        return _plan_signed_key(req, ca, now)
    key_pem, cert_pem = read_leaf(req, req["privatekey_path"]), read_leaf(req, req["path"])
    key = cert = None
    reasons = []
    if key_pem is not None:
        try:
            key = load_key(key_pem, None, req["privatekey_path"])
        except PkiError:
            key = None
    if key is None or key_type_of(key) != req["key_type"]:
        reasons.append("key" if key is None else "key type %s -> %s" % (key_type_of(key), req["key_type"]))
        key = None
    if cert_pem is not None:
        try:
            cert = load_certs(cert_pem)[0]
        except ValueError:
            cert = None
    if cert is None:
        reasons.append("no certificate")
        return reasons, key, None
    if key is not None and public_key_bytes(key) != public_key_bytes(cert.public_key()):
        reasons.append("certificate does not match the key")
    reasons += _cert_reasons(req, ca, cert, cert_pem, now)
    return reasons, key, cert


def _plan_signed_key(req, ca, now):
    """plan_leaf for a key made elsewhere (``public_key``): only the certificate is kept here."""
    cert_pem = read_leaf(req, req["path"])
    try:
        cert = load_certs(cert_pem)[0] if cert_pem is not None else None
    except ValueError:
        cert = None
    if cert is None:
        return ["no certificate"], None, None
    reasons = []
    if public_key_bytes(req["given_key"]) != public_key_bytes(cert.public_key()):
        reasons.append("certificate does not match the host's key")
    return reasons + _cert_reasons(req, ca, cert, cert_pem, now), None, cert


def _cert_reasons(req, ca, cert, cert_pem, now):
    """Why an existing certificate no longer fits its request (name, SANs, chain, profile, expiry)."""
    reasons = []
    if cert.subject != req["subject_name"]:
        reasons.append("subject %s -> %s" % (cert.subject.rfc4514_string(), req["subject_name"].rfc4514_string()))
    if cert_sans(cert) != req["sans"]:
        reasons.append("SANs %s -> %s" % (",".join(cert_sans(cert)), ",".join(req["sans"])))
    if not signed_by(cert, ca.cert) or cert_pem != cert_to_pem(cert) + ca.cert_pem:
        reasons.append("issuer or chain changed")
    if not _cert_profile_ok(cert, req["profile"]):
        reasons.append("profile %s" % req["profile"])
    remaining = cert.not_valid_after_utc - now
    if remaining <= datetime.timedelta(days=req["renew_before_days"]):
        reasons.append("renewal window: expires %s" % isoformat(cert.not_valid_after_utc))
    if req.get("force") and not reasons:
        reasons.append("forced")
    return reasons


def describe_cert(cert):
    if cert is None:
        return {}
    return {"serial": serial_hex(cert.serial_number), "subject": cert.subject.rfc4514_string(),
            "sans": cert_sans(cert), "not_after": isoformat(cert.not_valid_after_utc)}


def leaf_dir(req, path, create=False):
    """The directory of one of a request's files, reached safely (plugins/module_utils/_core/safepath.py).

    A request with ``home`` (a user's credential) is confined to that home, which must be the
    owner's own directory, and to directories the owner owns below it.
    """
    return open_dir(os.path.dirname(path), req.get("uid"), home=req.get("home"), create=create,
                    mode=req.get("dir_mode", 0o700), gid=req.get("gid"))


def read_leaf(req, path):
    """A request's existing key or certificate, None when it (or its directory) does not exist."""
    try:
        with leaf_dir(req, path) as directory:
            return directory.read(os.path.basename(path))
    except FileNotFoundError:
        return None


def repair_leaf_files(req, check_mode=False):
    """Give the existing files their modes and owners (through their descriptors); True if any was wrong."""
    changed = False
    files = [(req["path"], req.get("mode", 0o644))]
    if req.get("given_key") is None:  # a key made on its own host is not here
        files.insert(0, (req["privatekey_path"], req.get("key_mode", 0o600)))
    for path, mode in files:
        with leaf_dir(req, path) as directory:
            changed |= directory.fix(os.path.basename(path), mode, uid=req.get("uid"), gid=req.get("gid"),
                                     check_mode=check_mode)
    return changed


# --- ledger -----------------------------------------------------------------------


def requester():
    return os.environ.get("SUDO_USER") or getpass.getuser()


def ledger_record(cert, req, now, requested_by, reasons):
    return {
        "event": "issued",
        "serial": serial_hex(cert.serial_number),
        "subject": cert.subject.rfc4514_string(),
        "sans": cert_sans(cert),
        "key_type": req["key_type"],
        "not_before": isoformat(cert.not_valid_before_utc),
        "not_after": isoformat(cert.not_valid_after_utc),
        "profile": req["profile"],
        "issuer": cert.issuer.rfc4514_string(),
        "path": req["path"],
        "fingerprint_sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "reasons": reasons,
        "requested_by": requested_by or requester(),
        "issued_at": isoformat(now),
        "revoked_at": None,
        "revocation_reason": None,
    }


def _json_record(line):
    try:
        record = json.loads(line)
    except ValueError as exc:
        return None, "not JSON (%s)" % exc
    if not isinstance(record, dict):
        return None, "not a JSON object"
    try:
        record["serial"] = ledger_serial(record.get("serial"))
    except ValueError as exc:
        return None, str(exc)
    return record, None


def torn_tail_start(data):
    """Offset where an unfinished last record starts (a write cut short: no newline, or not JSON), or None."""
    end = data.rfind(b"\n") + 1
    if end < len(data):
        return end
    start = data.rfind(b"\n", 0, max(end - 1, 0)) + 1
    if data[start:end].strip():
        try:
            json.loads(data[start:end])
        except ValueError:  # half a record with a newline after it (an append glued to a torn one)
            return start
    return None


def parse_ledger(data):
    """THE ledger reader (the CA, the exporter and the audit use it): ``(entries, problems)``.

    *entries* maps serials (``ledger_serial`` format) to their issuance record with the revocation
    applied: a later ``{"event": "revoked"}`` line of the same serial sets ``revoked_at`` and
    ``revocation_reason``. *problems* lists the lines that could not be read (``line N: why``); an
    unfinished last record is one of them and is not read.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    folded, problems = {}, []
    torn = torn_tail_start(data)
    lines = (data if torn is None else data[:torn]).split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record, problem = _json_record(line)
        if problem:
            problems.append("line %d: %s" % (number, problem))
            continue
        serial = record["serial"]
        if record.get("event") == "revoked":
            entry = folded.setdefault(serial, {"serial": serial})
            entry["revoked_at"] = record.get("revoked_at")
            entry["revocation_reason"] = record.get("revocation_reason")
        else:
            previous = folded.get(serial, {})
            if previous.get("revoked_at"):
                record["revoked_at"] = previous["revoked_at"]
                record["revocation_reason"] = previous.get("revocation_reason")
            folded[serial] = record
    if torn is not None:
        problems.append("line %d: unfinished last record (%d bytes; a write was cut short)"
                        % (data[:torn].count(b"\n") + 1, len(data) - torn))
    return folded, problems


def _open_ledger(path, create):
    """The ledger's descriptor, for appending, under an exclusive lock (closing it releases the lock)."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_all(fd):
    size = os.fstat(fd).st_size
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _repair_torn_tail(fd, path):
    """Move an unfinished last record to ``<ledger>.torn-<time>`` and cut the ledger after its last good
    record, so that nothing is ever appended to half a line and the CRL can always be signed.
    Returns what was done (None when the ledger was whole)."""
    data = _read_all(fd)
    start = torn_tail_start(data)
    if start is None:
        return None
    side = "%s.torn-%s" % (path, datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ"))
    atomic_write(side, data[start:], mode=0o600)  # kept for the record, before it leaves the ledger
    os.ftruncate(fd, start)
    os.fsync(fd)
    return ("the ledger %s ended in an unfinished record (%d bytes, from a write that was cut short): moved to "
            "%s and the ledger cut after its last complete record" % (path, len(data) - start, side))


def _repair(fd, path, warn):
    try:
        message = _repair_torn_tail(fd, path)
    except OSError as exc:
        raise PkiError("the ledger %s ends in an unfinished record that could not be moved aside: %s"
                       % (path, exc.strerror or exc),
                       "free space on the CA's file system (or fix the error), then re-run") from None
    if message and warn:
        warn(message)


def append_ledger(path, records, warn=None):
    """Append *records* durably or raise PkiError: the caller must not deploy what the ledger lacks.

    Under an exclusive lock: an unfinished tail is repaired first; the records are written with
    O_APPEND, fsynced, and read back. If any of that fails, what landed of them is cut off again.
    Earlier records are never rewritten.
    """
    if not records:
        return
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    fd = _open_ledger(path, create=True)
    try:
        _repair(fd, path, warn)
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            landed = os.pread(fd, len(data) + 1, start)
            if landed != data:
                raise OSError("read back %d bytes that differ from the %d written" % (len(landed), len(data)))
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
                os.fsync(fd)
            except OSError:
                pass  # the next run finds the unfinished tail and repairs it
            raise PkiError("could not record %d issuance(s) in the ledger %s: %s; nothing was deployed"
                           % (len(records), path, exc.strerror or exc),
                           "free space on the CA's file system (or fix the error), then re-run") from None
    finally:
        os.close(fd)


def read_ledger(path, repair=True, warn=None):
    """The ledger folded by serial (``parse_ledger``) for the CA, which must trust every line.

    With *repair* an unfinished last record is moved aside first (under the lock); without (check
    mode) it is only left out. Any other unreadable line is an error: the ledger has been damaged.
    """
    try:
        fd = _open_ledger(path, create=False)
    except FileNotFoundError:
        return {}
    try:
        if repair:
            _repair(fd, path, warn)
        data = _read_all(fd)
    finally:
        os.close(fd)
    torn = torn_tail_start(data)
    if torn is not None:  # only without repair
        if warn:
            warn("the ledger %s ends in an unfinished record; a real run moves it aside" % path)
        data = data[:torn]
    folded, problems = parse_ledger(data)
    if problems:
        raise PkiError("ledger %s %s" % (path, "; ".join(problems)),
                       "the ledger is append-only: restore it from backup; do not edit it by hand")
    return folded


# --- revocation and CRL ------------------------------------------------------------


def normalise_serial(serial):
    try:
        return ledger_serial(serial)
    except ValueError:
        raise PkiError("serial %r is not a hex serial" % (serial,),
                       "give the serial as printed by the certificate module or `openssl x509 -serial`") from None


def plan_revocations(ledger, revoke):
    """Revocation records still to append; unknown serials are an error, repeated ones a no-op."""
    records, unknown = [], []
    for item in revoke or []:
        serial = normalise_serial(item["serial"])
        reason = item.get("reason") or "unspecified"
        if reason not in REVOCATION_REASONS:
            raise PkiError("revocation reason %r is not known" % (reason,),
                           "use one of: %s" % ", ".join(REVOCATION_REASONS))
        entry = ledger.get(serial)
        if entry is None or entry.get("event") != "issued":
            unknown.append(serial)
        elif not entry.get("revoked_at"):
            records.append({"event": "revoked", "serial": serial, "revocation_reason": reason})
    if unknown:
        raise PkiError("serial(s) %s were not issued by this CA (not in the ledger)" % ", ".join(unknown),
                       "check the serial in the ledger (ledger.jsonl) or with `openssl x509 -serial -noout`")
    return records


def crl_needs_update(crl_pem, ca, revoked_serials, renew_before_days, now=None):
    now = now or utcnow()
    if crl_pem is None:
        return "no CRL"
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError:
        return "CRL unreadable"
    if crl.issuer != ca.cert.subject or not crl.is_signature_valid(ca.cert.public_key()):
        return "CRL signed by another CA"
    if {serial_hex(r.serial_number) for r in crl} != set(revoked_serials):
        return "revocations changed"
    if crl.next_update_utc - now <= datetime.timedelta(days=renew_before_days):
        return "next update %s is near" % isoformat(crl.next_update_utc)
    return None


def build_crl(ca, revoked, days, now=None):
    """revoked: ledger entries with serial, revoked_at, revocation_reason."""
    now = now or utcnow()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(now).next_update(now + datetime.timedelta(days=days))
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca.ski), critical=False)
               .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False))
    for entry in revoked:
        when = datetime.datetime.strptime(entry["revoked_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        rev = (x509.RevokedCertificateBuilder().serial_number(int(entry["serial"], 16)).revocation_date(when))
        reason = entry.get("revocation_reason") or "unspecified"
        if reason != "unspecified":
            rev = rev.add_extension(x509.CRLReason(x509.ReasonFlags[reason]), critical=False)
        builder = builder.add_revoked_certificate(rev.build())
    return builder.sign(ca.key, _sign_algorithm(ca.key))


# --- the whole flow, shared by the certificate and certificate_batch modules ---------

def _resolve_owner(req):
    label = req["path"]
    owner, group = req.get("owner"), req.get("group")
    try:
        if owner is not None:
            req["uid"] = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        if group is not None:
            req["gid"] = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise PkiError("%s: owner %r or group %r does not exist on this host" % (label, owner, group),
                       "create the account first (or check the directory service) and re-run") from None
    for key in ("mode", "key_mode", "dir_mode"):
        if isinstance(req.get(key), str):
            req[key] = int(req[key], 8)
    home = req.get("home")
    if home:
        if not req.get("uid"):
            raise PkiError("%s: home %s is given without an owner other than root" % (label, home),
                           "give owner (the user whose home it is) with home")
        home = req["home"] = os.path.normpath(home)
        paths = (req["path"], req["privatekey_path"])
        if not all(os.path.isabs(p) for p in (home,) + paths) \
                or any(os.path.commonpath([home, os.path.normpath(p)]) != home for p in paths):
            raise PkiError("%s: path and privatekey_path must lie inside home %s" % (label, home),
                           "give absolute paths below the user's home")
    return req


def _refused(result, exc):
    """A request the CA would not touch: reported, and the other requests carry on."""
    reason = "%s does not exist" % exc.filename if isinstance(exc, FileNotFoundError) else str(exc)
    result.update(changed=False, refused=reason)
    return result


def ensure_certificates(ca_dir, passphrase, requests, *, defaults=None, check_mode=False, requested_by=None,
                        fsync=True, now=None, warn=None):
    """Issue or renew many leaves with one loaded CA. Returns (results, ledger_records).

    Every request is validated before anything is written. New certificates are signed in
    memory, recorded in the ledger (one locked, fsynced append), and only then written out,
    so a crash can leave the ledger listing a certificate that never reached its host, but
    never a deployed certificate the ledger does not know.

    A request whose files or directories are not safe for root to use (a symlink, a FIFO, a
    directory of another account; see safepath.py) is not touched: its result carries
    ``refused`` with the reason, and the other requests go on.
    """
    now = now or utcnow()
    reqs = [_resolve_owner(normalise_request(r, defaults)) for r in requests]
    seen = {}
    for req in reqs:
        if req["path"] in seen:
            raise PkiError("two requests write %s" % req["path"], "give every certificate its own path")
        seen[req["path"]] = True
    ca = IssuingCA(ca_dir, passphrase, now)
    results, pending, records = [], [], []
    for req in reqs:
        result = {"path": req["path"], "privatekey_path": req["privatekey_path"], "reasons": [],
                  "before": {}, "after": {}}
        results.append(result)
        try:
            reasons, key, cert = plan_leaf(req, ca, now)
            if not reasons:
                wrong = repair_leaf_files(req, check_mode)
        except (PathRefused, FileNotFoundError) as exc:
            _refused(result, exc)
            continue
        result.update(reasons=reasons, changed=bool(reasons), before=describe_cert(cert))
        if reasons:
            result["after"] = {"serial": "(new)", "subject": req["subject_name"].rfc4514_string(),
                               "sans": req["sans"]}
            if not check_mode:
                if req.get("given_key") is not None:
                    public, key, new_key = req["given_key"], None, False
                elif key is None or req.get("rotate_key"):
                    key, new_key = generate_key(req["key_type"]), True
                    public = key.public_key()
                else:
                    new_key, public = False, key.public_key()
                new = ca.sign(public, req["subject_name"], req["san_names"], profile=req["profile"],
                              days=req["days"], now=now)
                records.append(ledger_record(new, req, now, requested_by, reasons))
                pending.append((req, key if new_key else None, new, result))
                result["after"] = describe_cert(new)
        else:
            result["after"] = result["before"]
            if wrong:
                result["changed"] = True
                result["reasons"] = ["file mode or owner"]
    if check_mode:
        return results, []
    append_ledger(ca.paths["ledger"], records, warn)  # raises when they cannot be recorded: nothing is deployed
    for req, key, cert, result in pending:
        try:
            _write_leaf(req, key, cert, ca, fsync)
        except (PathRefused, FileNotFoundError) as exc:
            # The ledger already lists it: a certificate that never reached its owner, never the reverse.
            _refused(result, exc)
    return results, records


def _write_leaf(req, key, cert, ca, fsync=True):
    uid, gid = req.get("uid"), req.get("gid")
    create = bool(req.get("create_dirs"))
    if key is not None:
        with leaf_dir(req, req["privatekey_path"], create) as directory:
            directory.write(os.path.basename(req["privatekey_path"]), key_to_pem(key), req.get("key_mode", 0o600),
                            uid=uid, gid=gid, fsync=fsync, backup=req.get("backup", False))
    with leaf_dir(req, req["path"], create) as directory:
        directory.write(os.path.basename(req["path"]), cert_to_pem(cert) + ca.cert_pem, req.get("mode", 0o644),
                        uid=uid, gid=gid, fsync=fsync, backup=req.get("backup", False))
    if key is None:
        repair_leaf_files(req)


def ensure_crl(ca_dir, passphrase, *, revoke=None, days=7, renew_before_days=3, check_mode=False,
               requested_by=None, now=None, warn=None):
    """Append revocations to the ledger and (re)write crl.pem when needed. Returns a result dict."""
    now = now or utcnow()
    if not isinstance(days, int) or days < 1 or renew_before_days >= days:
        raise PkiError("crl days %r / renew_before_days %r are not usable" % (days, renew_before_days),
                       "give days >= 1 and renew_before_days < days (e.g. 7 and 3)")
    ca = IssuingCA(ca_dir, passphrase, now)
    ledger = read_ledger(ca.paths["ledger"], repair=not check_mode, warn=warn)
    new = plan_revocations(ledger, revoke)
    for record in new:
        record["revoked_at"] = isoformat(now)
        record["requested_by"] = requested_by or requester()
        ledger[record["serial"]].update(revoked_at=record["revoked_at"],
                                        revocation_reason=record["revocation_reason"])
    issuer = ca.cert.subject.rfc4514_string()
    revoked = sorted((e for e in ledger.values() if e.get("revoked_at") and e.get("issuer", issuer) == issuer),
                     key=lambda e: e["serial"])
    crl_path = ca.paths["crl"]
    before = read_file(crl_path)
    reason = crl_needs_update(before, ca, [e["serial"] for e in revoked], renew_before_days, now)
    result = {"changed": bool(new or reason), "revoked": [r["serial"] for r in new], "crl_reason": reason,
              "path": crl_path, "revoked_count": len(revoked)}
    if check_mode or not result["changed"]:
        if before and not reason:
            result["next_update"] = isoformat(x509.load_pem_x509_crl(before).next_update_utc)
        return result
    append_ledger(ca.paths["ledger"], new, warn)
    crl = build_crl(ca, revoked, days, now)
    atomic_write(crl_path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
    result["next_update"] = isoformat(crl.next_update_utc)
    return result
