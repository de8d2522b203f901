"""The audit reports against the real lab: playbooks/audit.yml, the CLI, and the HTML in headless Chromium.

playbooks/audit.yml reads the hosts (probe on every host, the scheduler on ctl, the ledger on the
CA host) and writes the reports on the Ansible controller; the tests read them there and compare
with what the hosts hold.
"""

from __future__ import annotations

import csv
import json
import shutil
import struct
import subprocess
import sys
import zlib

import jsonschema
import pytest
import yaml

from conftest import REPO, ansible_env, inventory_group, read_file, run_playbook

pytestmark = pytest.mark.lab

CA_HOST = inventory_group("ca")[0]  # svc
SECTIONS = ("summary", "findings", "inventory", "partitions", "access", "certificates", "usage", "drift",
            "packages", "sources")
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def reports(lab, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit-reports")
    run = run_playbook("audit.yml", extra_vars={"daskhpc_audit_reports_dir": str(out)})
    assert run.rc == 0 and run.failed == 0, run.output[-4000:]
    return out


@pytest.fixture(scope="module")
def report(reports):
    with open(reports / "audit-report.json") as handle:
        return json.load(handle)


def test_access_review_names_burst_users_through_datasci(report, reports):
    burst = {row["user"]: row for row in report["access"] if row["partition"] == "burst"}
    assert burst["alice"]["groups"] == ["datasci"] and burst["alice"]["association"] is True
    assert burst["bob"]["groups"] == ["datasci"] and burst["bob"]["association"] is True
    assert "mallory" not in burst and "carol" not in burst
    with open(reports / "csv" / "access.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["partition"], r["user"], r["groups"]) for r in rows} >= {("burst", "alice", "datasci"),
                                                                        ("burst", "bob", "datasci")}
    assert not [r for r in rows if r["user"] == "mallory"]


def test_certificate_inventory_lists_every_issued_certificate(report, lab_site):
    ledger_path = lab_site.get("ca", {}).get("dir", "/etc/daskhpc/ca") + "/ledger.jsonl"
    try:
        ledger = read_file(CA_HOST, ledger_path).decode()
    except FileNotFoundError:
        pytest.fail("no CA ledger at %s:%s: is playbooks/pki.yml part of lab.yml?" % (CA_HOST, ledger_path))
    # The report shows serials in the ledger's one format (upper-case hex).
    issued = {json.loads(line)["serial"].upper() for line in ledger.splitlines() if line.strip()}
    listed = {c["serial"] for c in report["certificates"] if c["source"] == "ledger"}
    assert issued and issued <= listed
    deployed = [c for c in report["certificates"] if c["source"] == "file"]
    assert any(c["path"].startswith("/etc/daskhpc/tls/") for c in deployed)
    assert all(c["in_ledger"] for c in deployed if not c["is_ca"])


def test_scheduler_facts_are_live(report):
    parts = {p["name"]: p for p in report["partitions"]}
    assert set(parts) == {"prod", "bigmem", "burst"}
    assert all(p["in_scheduler"] for p in parts.values())
    assert parts["burst"]["preempt_mode_scheduler"] == "REQUEUE" and parts["prod"]["preempt_mode_scheduler"] == "OFF"
    assert not [f for f in report["findings"] if f["severity"] in ("critical", "high")], report["findings"]


def test_json_validates_and_every_csv_parses(report, reports):
    from daskhpc.audit.render import SCHEMA_PATH, TABLES
    with open(SCHEMA_PATH) as handle:
        jsonschema.validate(report, json.load(handle), cls=jsonschema.Draft202012Validator)
    for name, _section, _title, columns, _rows in TABLES:
        with open(reports / "csv" / (name + ".csv"), newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == columns and all(len(r) == len(columns) for r in rows), name


def test_planted_preemptable_production_partition_shows_with_its_severity(lab, lab_site, reports, tmp_path):
    """A test site model whose burst tier outranks production, audited against the facts audit.yml just
    gathered from the live lab's hosts (the CLI reads no local source: the controller runs no daemon)."""
    planted = json.loads(json.dumps(lab_site))
    next(p for p in planted["partitions"] if p["name"] == "burst")["priority_tier"] = 50
    model = tmp_path / "site.yml"
    model.write_text(yaml.safe_dump({"daskhpc_site": planted}))
    proc = subprocess.run([sys.executable, "-m", "daskhpc.cli", "audit", "--site-model", str(model),
                           "--facts", str(reports / "audit-facts.json"), "--no-live",
                           "--output", str(tmp_path / "out"), "--formats", "json,html"],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "out" / "audit-report.json").read_text())
    found = {f["id"]: f for f in data["findings"]}
    assert found["preemptable-production:prod<-burst"]["severity"] == "critical"
    assert data["findings"][0]["severity"] == "critical"
    row = '<td class="sev-critical">critical</td><td>preemptable-production</td><td>prod&lt;-burst</td>'
    assert row in (tmp_path / "out" / "audit-report.html").read_text()


# --- the HTML in a real browser ---------------------------------------------------------


def chromium(tmp_path, *args):
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--user-data-dir=%s" % (tmp_path / "profile"), "--window-size=1280,1600", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)


def png_pixels(path):
    """(width, height, rows of bytes) of an 8-bit RGB/RGBA PNG, decoded with zlib and struct only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, up_left = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium package is not installed")
def test_html_opens_in_headless_chromium_with_every_section(reports, tmp_path):
    url = (reports / "audit-report.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert '<section id="%s">' % section in dom.stdout, section
    assert dom.stdout.count("<svg") == 4 and "alice" in dom.stdout

    shot = tmp_path / "report.png"
    run = chromium(tmp_path, "--screenshot=%s" % shot, url)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    width, height, bpp, rows = png_pixels(shot)
    assert (width, height) == (1280, 1600)
    # Non-blank: many pixels differ from the white background, and the picture holds several colours.
    sample = [row[x:x + 3] for row in rows[::8] for x in range(0, width * bpp, bpp * 8)]
    inked = sum(1 for px in sample if px != b"\xff\xff\xff")
    assert inked > len(sample) * 0.02, "screenshot is (nearly) blank"
    assert len(set(sample)) > 10
