"""The CA ledger is append-only and durable: faults while recording, torn tails, one reader for everyone.

Faults are injected where the kernel would report them: os.write writes half a record and then
fails with ENOSPC (a full disk), os.ftruncate fails, a write claims success but nothing lands.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil

import pytest
from cryptography import x509

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki

PASS = "correct horse battery staple"
DEFAULTS = {"days": 90, "renew_before_days": 30, "create_dirs": True}


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


def ledger_path(ca_dir):
    return os.path.join(ca_dir, "ledger.jsonl")


def ledger_bytes(ca_dir):
    with open(ledger_path(ca_dir), "rb") as handle:
        return handle.read()


def issue(ca_dir, out, name="host1", warn=None):
    req = {"path": str(out / ("%s.pem" % name)), "subject": {"CN": name}}
    results, records = pki.ensure_certificates(ca_dir, PASS, [req], defaults=DEFAULTS, warn=warn)
    return results[0], records


def disk_full_after_half(monkeypatch):
    """The next os.write writes half its bytes, then the disk is full."""
    real_write = os.write

    def write(fd, data):
        monkeypatch.setattr(os, "write", real_write)
        real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)


def crl_serials(result):
    with open(result["path"], "rb") as handle:
        return {"%X" % r.serial_number for r in x509.load_pem_x509_crl(handle.read())}


# --- a full disk while recording --------------------------------------------------------------


def test_full_disk_refuses_issuance_and_leaves_no_half_record(ca_dir, tmp_path, monkeypatch):
    first, _records = issue(ca_dir, tmp_path)
    before = ledger_bytes(ca_dir)
    disk_full_after_half(monkeypatch)
    with pytest.raises(pki.PkiError, match="could not record 1 issuance.*No space left.*nothing was deployed"):
        issue(ca_dir, tmp_path, "host2")
    assert not os.path.exists(tmp_path / "host2.pem") and not os.path.exists(tmp_path / "host2.key")
    assert ledger_bytes(ca_dir) == before  # what landed of the record was cut off again
    revoked = pki.ensure_crl(ca_dir, PASS, revoke=[{"serial": first["after"]["serial"]}])
    assert crl_serials(revoked) == {first["after"]["serial"]}


def test_full_disk_and_failed_cleanup_leave_a_tail_the_next_run_repairs(ca_dir, tmp_path, monkeypatch):
    first, _records = issue(ca_dir, tmp_path)
    before = ledger_bytes(ca_dir)
    disk_full_after_half(monkeypatch)
    monkeypatch.setattr(os, "ftruncate", lambda fd, size: (x for x in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(pki.PkiError, match="could not record"):
        issue(ca_dir, tmp_path, "host2")
    monkeypatch.undo()
    torn = ledger_bytes(ca_dir)[len(before):]
    assert torn and not torn.endswith(b"\n")  # the state the incident left behind
    warnings = []
    result = pki.ensure_crl(ca_dir, PASS, revoke=[{"serial": first["after"]["serial"]}], warn=warnings.append)
    assert crl_serials(result) == {first["after"]["serial"]}
    (side,) = glob.glob(ledger_path(ca_dir) + ".torn-*")
    assert open(side, "rb").read() == torn
    assert "unfinished record" in warnings[0] and side in warnings[0]
    assert ledger_bytes(ca_dir).startswith(before) and ledger_bytes(ca_dir).endswith(b"\n")
    assert pki.parse_ledger(ledger_bytes(ca_dir))[1] == []


def test_write_that_does_not_land_is_caught_by_reading_back(ca_dir, tmp_path, monkeypatch):
    issue(ca_dir, tmp_path)
    before = ledger_bytes(ca_dir)
    real_write = os.write

    def lying_write(fd, data):
        monkeypatch.setattr(os, "write", real_write)
        return real_write(fd, b"x" * len(data))  # claims success, wrong bytes land

    monkeypatch.setattr(os, "write", lying_write)
    with pytest.raises(pki.PkiError, match="could not record.*differ"):
        issue(ca_dir, tmp_path, "host2")
    assert not os.path.exists(tmp_path / "host2.pem")
    assert ledger_bytes(ca_dir) == before


def test_full_disk_while_recording_a_revocation_changes_nothing(ca_dir, tmp_path, monkeypatch):
    first, _records = issue(ca_dir, tmp_path)
    before = ledger_bytes(ca_dir)
    disk_full_after_half(monkeypatch)
    with pytest.raises(pki.PkiError, match="could not record"):
        pki.ensure_crl(ca_dir, PASS, revoke=[{"serial": first["after"]["serial"]}])
    assert ledger_bytes(ca_dir) == before and not os.path.exists(os.path.join(ca_dir, "crl.pem"))


# --- torn tails found on open ---------------------------------------------------------------------


@pytest.mark.parametrize("tail", [b'{"event": "issued", "serial": "AB', b'{"serial": "AB", "subj\n'])
def test_torn_tail_is_moved_aside_and_the_crl_signed(ca_dir, tmp_path, tail):
    first, _records = issue(ca_dir, tmp_path)
    good = ledger_bytes(ca_dir)
    with open(ledger_path(ca_dir), "ab") as handle:
        handle.write(tail)
    warnings = []
    result = pki.ensure_crl(ca_dir, PASS, revoke=[{"serial": first["after"]["serial"]}], warn=warnings.append)
    assert crl_serials(result) == {first["after"]["serial"]}
    (side,) = glob.glob(ledger_path(ca_dir) + ".torn-*")
    assert open(side, "rb").read() == tail and warnings
    lines = ledger_bytes(ca_dir).splitlines(keepends=True)
    assert b"".join(lines[:-1]) == good and json.loads(lines[-1])["event"] == "revoked"


def test_issuance_after_a_torn_tail_starts_on_a_clean_line(ca_dir, tmp_path):
    issue(ca_dir, tmp_path)
    with open(ledger_path(ca_dir), "ab") as handle:
        handle.write(b'{"event": "issued", "ser')
    warnings = []
    second, records = issue(ca_dir, tmp_path, "host2", warn=warnings.append)
    assert records and warnings
    folded, problems = pki.parse_ledger(ledger_bytes(ca_dir))
    assert problems == [] and second["after"]["serial"] in folded


def test_check_mode_only_reports_a_torn_tail(ca_dir, tmp_path):
    issue(ca_dir, tmp_path)
    with open(ledger_path(ca_dir), "ab") as handle:
        handle.write(b'{"event": "iss')
    before = ledger_bytes(ca_dir)
    warnings = []
    pki.ensure_crl(ca_dir, PASS, check_mode=True, warn=warnings.append)
    assert ledger_bytes(ca_dir) == before and not glob.glob(ledger_path(ca_dir) + ".torn-*")
    assert "a real run moves it aside" in warnings[0]


def test_damage_inside_the_ledger_is_not_silently_dropped(ca_dir, tmp_path):
    """Only an unfinished *last* record is a torn write; a bad line before others may hide a revocation."""
    issue(ca_dir, tmp_path)
    good = ledger_bytes(ca_dir)
    with open(ledger_path(ca_dir), "wb") as handle:
        handle.write(b"garbage\n" + good)
    with pytest.raises(pki.PkiError, match="line 1: not JSON.*restore it from backup"):
        pki.ensure_crl(ca_dir, PASS)


# --- one reader, one serial format -----------------------------------------------------------------


LEDGER = b"".join(json.dumps(r).encode() + b"\n" for r in [
    {"event": "issued", "serial": "0a:bc", "subject": "CN=a", "profile": "host", "not_after": "2099-01-01T00:00:00Z"},
    {"event": "issued", "serial": "00DEF", "subject": "CN=b", "profile": "user", "not_after": "2099-01-01T00:00:00Z"},
    {"event": "revoked", "serial": "0xdef", "revoked_at": "2024-05-01T00:00:00Z", "revocation_reason": "superseded"},
]) + b'{"event": "issued", "serial": "1'


def test_ca_exporter_and_audit_read_the_ledger_alike(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from daskhpc.audit import certs
    from daskhpc.exporter.collectors import CertificateCollector, ExporterStats

    path = tmp_path / "ledger.jsonl"
    path.write_bytes(LEDGER)
    folded, problems = pki.parse_ledger(LEDGER)
    assert sorted(folded) == ["ABC", "DEF"] and folded["DEF"]["revocation_reason"] == "superseded"
    assert problems == ["line 4: unfinished last record (32 bytes; a write was cut short)"]

    registry = CollectorRegistry(auto_describe=False)
    stats = ExporterStats()
    registry.register(CertificateCollector(str(path), stats, clock=lambda: 1714564800.0))
    registry.register(stats)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    serials = {dict(labels)["serial"] for name, labels in samples
               if name == "daskhpc_certificate_expiry_timestamp_seconds"}
    assert serials == {"ABC"}  # DEF is revoked
    assert samples[("daskhpc_certificates", (("state", "revoked"),))] == 1
    assert samples[("daskhpc_scrape_errors_total", (("source", "ledger"),))] == 1  # the torn tail, reported
    assert path.read_bytes() == LEDGER  # readers never repair

    rows = {r["serial"]: r for r in certs.ledger_certificates(folded, certs.parse_time("2024-05-01T00:00:00Z"))}
    assert sorted(rows) == ["ABC", "DEF"] and rows["DEF"]["status"] == "revoked"
    assert certs.ledger_serial(0xABC) == "ABC"  # deployed files are matched in the same format
