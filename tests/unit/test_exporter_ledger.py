"""Certificate expiry from the CA ledger (JSON lines, fields in docs/INTERFACES)."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daskhpc.exporter.collectors import CertificateCollector, ExporterStats

NOW = 1714564800.0  # 2024-05-01T12:00:00Z


def entry(serial, subject, profile, not_after, revoked_at=None):
    return {"serial": serial, "subject": subject, "sans": [], "key_type": "ecdsa-p256",
            "not_before": "2024-04-01T00:00:00Z", "not_after": not_after, "profile": profile,
            "requested_by": "root", "issued_at": "2024-04-01T00:00:00Z", "revoked_at": revoked_at,
            "revocation_reason": None}


def scrape(path):
    stats = ExporterStats()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CertificateCollector(str(path), stats, clock=lambda: NOW))
    registry.register(stats)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def test_absent_ledger_is_tolerated(tmp_path):
    samples = scrape(tmp_path / "ledger.jsonl")
    assert samples[("daskhpc_ca_ledger_present", frozenset())] == 0
    assert not any(name == "daskhpc_certificate_expiry_timestamp_seconds" for name, _value in samples)


def test_newest_unrevoked_certificate_per_subject(tmp_path):
    path = tmp_path / "ledger.jsonl"
    lines = [
        entry("01", "CN=slapd", "service", "2024-05-10T00:00:00Z"),
        entry("02", "CN=slapd", "service", "2024-07-30T00:00:00Z"),  # renewal replaces 01
        entry("03", "CN=prometheus", "service", "2024-06-01T00:00:00+00:00", revoked_at="2024-04-02T00:00:00Z"),
        entry("04", "CN=alice", "user", 1714000000),  # expired a week ago: still shown
        entry("05", "CN=bob", "user", 1700000000),  # expired months ago: forgotten
        entry("06", "CN=carol", "user", "2024-05-20T00:00:00Z"),
        # revocations are appended as their own lines (the CA's ledger is append-only)
        {"event": "revoked", "serial": "06", "revoked_at": "2024-04-20T00:00:00Z",
         "revocation_reason": "keyCompromise"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    samples = scrape(path)
    expiry = {dict(labels)["subject"]: (dict(labels)["serial"], v) for (name, labels), v in samples.items()
              if name == "daskhpc_certificate_expiry_timestamp_seconds"}
    assert expiry["CN=slapd"] == ("2", 1722297600.0)  # "02" in the CA's one serial format

    assert "CN=prometheus" not in expiry
    assert expiry["CN=alice"] == ("4", 1714000000.0)
    assert "CN=bob" not in expiry
    assert "CN=carol" not in expiry
    assert samples[("daskhpc_certificates", frozenset({("state", "revoked")}))] == 2
    assert samples[("daskhpc_certificates", frozenset({("state", "expired")}))] == 2
    assert samples[("daskhpc_certificates", frozenset({("state", "valid")}))] == 2
    # the broken line is counted as an error, the rest is still read
    assert samples[("daskhpc_scrape_errors_total", frozenset({("source", "ledger")}))] == 1
    assert samples[("daskhpc_ca_ledger_present", frozenset())] == 1
