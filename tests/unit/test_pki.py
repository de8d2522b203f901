"""Unit tests of plugins/module_utils/_core/pki.py: CA, issuance idempotence, renewal, errors, ledger, CRL."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki

PASS = "correct horse battery staple"
DEFAULTS = {"days": 90, "renew_before_days": 30}


@pytest.fixture(scope="module")
def pristine_ca(tmp_path_factory):
    ca_dir = str(tmp_path_factory.mktemp("pristine") / "ca")
    pki.ensure_ca(ca_dir, "unit CA", PASS)
    return ca_dir


@pytest.fixture
def ca_dir(pristine_ca, tmp_path):
    target = str(tmp_path / "ca")
    shutil.copytree(pristine_ca, target)
    return target


def issue(ca_dir, tmp_path, now=None, check_mode=False, **overrides):
    req = {"path": str(tmp_path / "out" / "host.pem"), "subject": {"CN": "host1.example.org"},
           "subject_alt_names": ["host1.example.org", "IP:192.0.2.10"], "create_dirs": True}
    req.update(overrides)
    results, records = pki.ensure_certificates(ca_dir, PASS, [req], defaults=DEFAULTS, now=now,
                                               check_mode=check_mode)
    return results[0], records


def read_cert(path):
    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificates(handle.read())


def ledger_lines(ca_dir):
    with open(os.path.join(ca_dir, "ledger.jsonl")) as handle:
        return [json.loads(line) for line in handle]


# --- keys and names ---------------------------------------------------------------

@pytest.mark.parametrize("key_type", [k for k in pki.KEY_TYPES if k != "rsa-4096"])
def test_generated_key_has_requested_type(key_type):
    assert pki.key_type_of(pki.generate_key(key_type)) == key_type


def test_unknown_key_type_is_refused():
    with pytest.raises(pki.PkiError, match="not supported"):
        pki.generate_key("dsa-1024")


@pytest.mark.parametrize(("value", "expected"), [
    ("host.example.org", "DNS:host.example.org"),
    ("DNS:Host.Example.org", "DNS:host.example.org"),
    ("*.example.org", "DNS:*.example.org"),
    ("192.0.2.1", "IP:192.0.2.1"),
    ("IP:2001:db8::1", "IP:2001:db8::1"),
])
def test_valid_sans(value, expected):
    assert pki.san_strings([pki.parse_san(value)]) == [expected]


@pytest.mark.parametrize("value", ["bad name", "IP:300.1.1.1", "-lead.example.org", "a..b", "host_1.example",
                                   "foo.*.example.org"])
def test_invalid_san_is_refused_with_fix(value):
    with pytest.raises(pki.PkiError) as err:
        pki.parse_san(value)
    assert repr(value) in err.value.problem and "Fix:" in str(err.value)


# --- the CA -------------------------------------------------------------------------

def test_ca_is_root_plus_intermediate_with_encrypted_keys(ca_dir):
    paths = pki.ca_paths(ca_dir)
    root = read_cert(paths["root_cert"])[0]
    inter = read_cert(paths["cert"])[0]
    assert pki.signed_by(inter, root) and pki.signed_by(root, root)
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    for key in ("root_key", "key"):
        assert stat.S_IMODE(os.stat(paths[key]).st_mode) == 0o600
        with open(paths[key], "rb") as handle:
            assert b"ENCRYPTED PRIVATE KEY" in handle.read()
    bundle = read_cert(paths["bundle"])
    assert [c.subject for c in bundle] == [root.subject, inter.subject]


def test_ca_second_run_changes_nothing(ca_dir):
    before = {f: os.stat(os.path.join(ca_dir, f)).st_mtime_ns for f in os.listdir(ca_dir)}
    actions, _summary = pki.ensure_ca(ca_dir, "unit CA", PASS)
    assert actions == []
    assert before == {f: os.stat(os.path.join(ca_dir, f)).st_mtime_ns for f in os.listdir(ca_dir)}


def test_wrong_passphrase_is_named_and_nothing_written(ca_dir, tmp_path):
    listing = sorted(os.listdir(ca_dir))
    with pytest.raises(pki.PkiError, match="wrong passphrase for the root key"):
        pki.ensure_ca(ca_dir, "unit CA", "not the passphrase at all")
    with pytest.raises(pki.PkiError, match="wrong passphrase for the issuing key"):
        pki.ensure_certificates(ca_dir, "not the passphrase at all", [{"path": str(tmp_path / "x.pem"),
                                                                      "subject": {"CN": "x"}}], defaults=DEFAULTS)
    assert sorted(os.listdir(ca_dir)) == listing
    assert not os.path.exists(tmp_path / "x.pem")


def test_short_passphrase_is_refused(tmp_path):
    with pytest.raises(pki.PkiError, match="shorter than 12"):
        pki.ensure_ca(str(tmp_path / "ca"), "unit CA", "short")
    assert not os.path.exists(tmp_path / "ca")


def test_ca_cannot_be_renamed(ca_dir):
    with pytest.raises(pki.PkiError, match="cannot be renamed"):
        pki.ensure_ca(ca_dir, "other CA", PASS)


def test_offline_root_is_fine_until_it_is_needed(ca_dir):
    os.unlink(os.path.join(ca_dir, "root.key"))
    assert pki.ensure_ca(ca_dir, "unit CA", PASS)[0] == []
    later = pki.utcnow() + datetime.timedelta(days=1095 - 30)  # intermediate inside its renewal window
    with pytest.raises(pki.PkiError, match="root key .* is missing"):
        pki.ensure_ca(ca_dir, "unit CA", PASS, now=later)


def test_intermediate_renewal_keeps_key_so_old_leaves_still_verify(ca_dir, tmp_path):
    result, _records = issue(ca_dir, tmp_path)
    old_inter = read_cert(os.path.join(ca_dir, "intermediate.pem"))[0]
    later = pki.utcnow() + datetime.timedelta(days=1095 - 30)
    actions, _summary = pki.ensure_ca(ca_dir, "unit CA", PASS, now=later)
    assert [a for a, _detail in actions] == ["intermediate"]
    new_inter = read_cert(os.path.join(ca_dir, "intermediate.pem"))[0]
    assert new_inter.serial_number != old_inter.serial_number
    leaf = read_cert(result["path"])[0]
    assert pki.signed_by(leaf, new_inter)


def test_missing_issuing_key_is_a_clear_error(ca_dir, tmp_path):
    os.unlink(os.path.join(ca_dir, "intermediate.key"))
    with pytest.raises(pki.PkiError, match="issuing CA .* is missing"):
        issue(ca_dir, tmp_path)
    assert not os.path.exists(tmp_path / "out")


def test_expired_issuing_ca_is_a_clear_error(ca_dir, tmp_path):
    with pytest.raises(pki.PkiError, match="issuing CA .* expired"):
        issue(ca_dir, tmp_path, now=pki.utcnow() + datetime.timedelta(days=2000))
    assert not os.path.exists(tmp_path / "out")


# --- leaves: idempotence, renewal, profiles ----------------------------------------------

def test_issue_then_second_run_keeps_serial(ca_dir, tmp_path):
    first, records = issue(ca_dir, tmp_path)
    assert first["changed"] and len(records) == 1
    second, records = issue(ca_dir, tmp_path)
    assert not second["changed"] and records == []
    assert second["after"]["serial"] == first["after"]["serial"]
    key_mode = stat.S_IMODE(os.stat(first["privatekey_path"]).st_mode)
    assert key_mode == 0o600
    chain = read_cert(first["path"])
    assert len(chain) == 2 and chain[1] == read_cert(os.path.join(ca_dir, "intermediate.pem"))[0]


def test_check_mode_writes_nothing(ca_dir, tmp_path):
    result, records = issue(ca_dir, tmp_path, check_mode=True)
    assert result["changed"] and result["after"]["serial"] == "(new)" and records == []
    assert not os.path.exists(tmp_path / "out")
    assert not os.path.exists(os.path.join(ca_dir, "ledger.jsonl"))


@pytest.mark.parametrize(("change", "reason"), [
    ({"subject": {"CN": "host2.example.org"}}, "subject"),
    ({"subject_alt_names": ["host1.example.org"]}, "SANs"),
    ({"key_type": "ed25519"}, "key type"),
    ({"profile": "user", "subject": {"CN": "host1.example.org", "OU": "users"}}, "subject"),
])
def test_reissue_on_change(ca_dir, tmp_path, change, reason):
    first, _records = issue(ca_dir, tmp_path)
    second, _records = issue(ca_dir, tmp_path, **change)
    assert second["changed"] and any(r.startswith(reason) for r in second["reasons"]), second["reasons"]
    assert second["after"]["serial"] != first["after"]["serial"]


def test_profile_change_alone_reissues(ca_dir, tmp_path):
    first, _records = issue(ca_dir, tmp_path, profile="host")
    second, _records = issue(ca_dir, tmp_path, profile="service")
    assert second["reasons"] == ["profile service"]
    assert second["after"]["serial"] != first["after"]["serial"]
    cert = read_cert(second["path"])[0]
    ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not issue(ca_dir, tmp_path, profile="service")[0]["changed"]


def test_renewal_window(ca_dir, tmp_path):
    first, _records = issue(ca_dir, tmp_path)
    outside = pki.utcnow() + datetime.timedelta(days=59)
    assert not issue(ca_dir, tmp_path, now=outside)[0]["changed"]
    inside = pki.utcnow() + datetime.timedelta(days=61)
    renewed, _records = issue(ca_dir, tmp_path, now=inside)
    assert renewed["changed"] and renewed["reasons"][0].startswith("renewal window")
    assert renewed["after"]["serial"] != first["after"]["serial"]
    # the key is kept unless rotate_key
    assert pki.public_key_bytes(read_cert(first["path"])[0].public_key()) == \
        pki.public_key_bytes(pki.load_key(open(first["privatekey_path"], "rb").read()))


def test_rotate_key_makes_a_new_key_on_renewal(ca_dir, tmp_path):
    first, _records = issue(ca_dir, tmp_path)
    old_key = open(first["privatekey_path"], "rb").read()
    issue(ca_dir, tmp_path, now=pki.utcnow() + datetime.timedelta(days=61), rotate_key=True)
    assert open(first["privatekey_path"], "rb").read() != old_key


def test_certificate_from_another_ca_is_reissued(ca_dir, tmp_path):
    issue(ca_dir, tmp_path)
    other = str(tmp_path / "other-ca")
    pki.ensure_ca(other, "unit CA", PASS)
    results, _records = pki.ensure_certificates(other, PASS, [{"path": str(tmp_path / "out" / "host.pem"),
                                                               "subject": {"CN": "host1.example.org"},
                                                               "subject_alt_names": ["host1.example.org",
                                                                                     "IP:192.0.2.10"]}],
                                                defaults=DEFAULTS)
    assert results[0]["reasons"] == ["issuer or chain changed"]


def test_user_profile_sets_ou_and_ekus(ca_dir, tmp_path):
    result, records = issue(ca_dir, tmp_path, subject={"CN": "alice"}, subject_alt_names=[], profile="user",
                            days=7, renew_before_days=2)
    cert = read_cert(result["path"])[0]
    assert cert.subject.rfc4514_string() == "CN=alice,OU=users"
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=7) <= span <= datetime.timedelta(days=7, minutes=5)
    with pytest.raises(pki.PkiError, match="OU=users"):
        issue(ca_dir, tmp_path, subject={"CN": "alice", "OU": "admins"}, profile="user", days=7,
              renew_before_days=2)


def test_invalid_san_in_batch_writes_nothing(ca_dir, tmp_path):
    good = {"path": str(tmp_path / "a.pem"), "subject": {"CN": "a"}}
    bad = {"path": str(tmp_path / "b.pem"), "subject": {"CN": "b"}, "subject_alt_names": ["not valid!"]}
    with pytest.raises(pki.PkiError, match=r"b\.pem: SAN 'not valid!'"):
        pki.ensure_certificates(ca_dir, PASS, [good, bad], defaults=DEFAULTS)
    assert not os.path.exists(good["path"]) and not os.path.exists(os.path.join(ca_dir, "ledger.jsonl"))


def test_renew_before_must_be_shorter_than_validity(ca_dir, tmp_path):
    with pytest.raises(pki.PkiError, match="renew_before_days"):
        issue(ca_dir, tmp_path, days=7, renew_before_days=7)


def test_wrong_mode_is_repaired_without_reissue(ca_dir, tmp_path):
    first, _records = issue(ca_dir, tmp_path)
    os.chmod(first["privatekey_path"], 0o644)
    second, records = issue(ca_dir, tmp_path)
    assert second["changed"] and second["reasons"] == ["file mode or owner"] and records == []
    assert stat.S_IMODE(os.stat(first["privatekey_path"]).st_mode) == 0o600
    assert second["after"]["serial"] == first["after"]["serial"]


def test_backup_keeps_replaced_certificate(ca_dir, tmp_path):
    issue(ca_dir, tmp_path, backup=True)
    issue(ca_dir, tmp_path, backup=True, subject={"CN": "renamed.example.org"})
    backups = [f for f in os.listdir(tmp_path / "out") if f.startswith("host.pem.") and f.endswith("~")]
    assert len(backups) == 1


def test_batch_of_users_is_idempotent(ca_dir, tmp_path):
    reqs = [{"path": str(tmp_path / u / ".daskhpc/tls/user.pem"), "subject": {"CN": u}, "profile": "user",
             "create_dirs": True} for u in ("alice", "bob", "carol")]
    defaults = {"days": 7, "renew_before_days": 2}
    results, records = pki.ensure_certificates(ca_dir, PASS, reqs, defaults=defaults)
    assert len(records) == 3 and all(r["changed"] for r in results)
    assert stat.S_IMODE(os.stat(tmp_path / "alice" / ".daskhpc").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "alice" / ".daskhpc" / "tls").st_mode) == 0o700
    again, records = pki.ensure_certificates(ca_dir, PASS, reqs, defaults=defaults)
    assert records == [] and not any(r["changed"] for r in again)
    with pytest.raises(pki.PkiError, match="two requests write"):
        pki.ensure_certificates(ca_dir, PASS, reqs + reqs[:1], defaults=defaults)


# --- ledger and CRL ------------------------------------------------------------------

def test_ledger_records_every_issuance_with_contract_fields(ca_dir, tmp_path):
    first, _records = issue(ca_dir, tmp_path)
    issue(ca_dir, tmp_path, subject={"CN": "host2.example.org"})
    lines = ledger_lines(ca_dir)
    assert len(lines) == 2
    for field in ("serial", "subject", "sans", "key_type", "not_before", "not_after", "profile", "requested_by",
                  "issued_at", "revoked_at", "revocation_reason"):
        assert field in lines[0]
    assert lines[0]["serial"] == first["after"]["serial"]
    assert lines[0]["sans"] == ["DNS:host1.example.org", "IP:192.0.2.10"]
    assert stat.S_IMODE(os.stat(os.path.join(ca_dir, "ledger.jsonl")).st_mode) == 0o640


def test_revocation_appends_and_readers_fold(ca_dir, tmp_path):
    first, _records = issue(ca_dir, tmp_path)
    ledger_path = os.path.join(ca_dir, "ledger.jsonl")
    before = open(ledger_path, "rb").read()
    result = pki.ensure_crl(ca_dir, PASS, revoke=[{"serial": first["after"]["serial"].lower(),
                                                   "reason": "key_compromise"}])
    assert result["changed"] and result["revoked"] == [first["after"]["serial"]]
    after = open(ledger_path, "rb").read()
    assert after.startswith(before) and len(after.splitlines()) == 2  # appended, never rewritten
    folded = pki.read_ledger(ledger_path)[first["after"]["serial"]]
    assert folded["revocation_reason"] == "key_compromise" and folded["revoked_at"]
    assert folded["subject"] == "CN=host1.example.org"
    crl = x509.load_pem_x509_crl(open(result["path"], "rb").read())
    entry = crl.get_revoked_certificate_by_serial_number(int(first["after"]["serial"], 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    again = pki.ensure_crl(ca_dir, PASS, revoke=[{"serial": first["after"]["serial"], "reason": "key_compromise"}])
    assert not again["changed"] and open(ledger_path, "rb").read() == after


def test_unknown_serial_is_refused(ca_dir):
    with pytest.raises(pki.PkiError, match="not issued by this CA"):
        pki.ensure_crl(ca_dir, PASS, revoke=[{"serial": "ABCDEF"}])
    assert not os.path.exists(os.path.join(ca_dir, "crl.pem"))


def test_crl_is_resigned_before_next_update(ca_dir):
    first = pki.ensure_crl(ca_dir, PASS, days=7, renew_before_days=3)
    assert first["changed"] and first["crl_reason"] == "no CRL"
    assert not pki.ensure_crl(ca_dir, PASS, days=7, renew_before_days=3,
                              now=pki.utcnow() + datetime.timedelta(days=3, hours=1))["changed"]
    late = pki.ensure_crl(ca_dir, PASS, days=7, renew_before_days=3,
                          now=pki.utcnow() + datetime.timedelta(days=4, hours=1))
    assert late["changed"] and late["crl_reason"].startswith("next update")


def test_bad_serial_text_is_refused():
    with pytest.raises(pki.PkiError, match="not a hex serial"):
        pki.normalise_serial("xyz")
    assert pki.normalise_serial("0x0a:bc") == "ABC"


# --- keys made on their own host: the CA signs a public key and never holds the private one ---------


def public_pem(key):
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_a_public_key_from_the_host_is_signed_and_no_private_key_is_made_here(ca_dir, tmp_path):
    host_key = pki.generate_key("ecdsa-p256")
    result, records = issue(ca_dir, tmp_path, public_key=public_pem(host_key))
    assert result["changed"] and len(records) == 1
    cert = read_cert(result["path"])[0]
    assert pki.public_key_bytes(cert.public_key()) == pki.public_key_bytes(host_key)
    assert not os.path.exists(result["privatekey_path"])
    again, records = issue(ca_dir, tmp_path, public_key=public_pem(host_key))
    assert not again["changed"] and records == []
    assert not os.path.exists(result["privatekey_path"])


def test_a_new_host_key_gets_a_new_certificate(ca_dir, tmp_path):
    first, _records = issue(ca_dir, tmp_path, public_key=public_pem(pki.generate_key("ecdsa-p256")))
    replaced = pki.generate_key("ecdsa-p256")
    second, _records = issue(ca_dir, tmp_path, public_key=public_pem(replaced))
    assert second["changed"] and "certificate does not match the host's key" in second["reasons"]
    assert pki.public_key_bytes(read_cert(second["path"])[0].public_key()) == pki.public_key_bytes(replaced)
    assert second["after"]["serial"] != first["after"]["serial"]


@pytest.mark.parametrize("given, match", [("not a key", "not a PEM public key"),
                                          ("rsa", "is a rsa-2048 key, not ecdsa-p256")])
def test_a_bad_public_key_is_refused_with_its_fix(ca_dir, tmp_path, given, match):
    text = public_pem(pki.generate_key("rsa-2048")) if given == "rsa" else given
    with pytest.raises(pki.PkiError, match=match):
        issue(ca_dir, tmp_path, public_key=text)
    assert not os.path.exists(tmp_path / "out" / "host.pem")
