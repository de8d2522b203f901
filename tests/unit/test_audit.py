"""Unit tests of the audit report: findings, access review, certificates, usage, renderers, schema."""

from __future__ import annotations

import copy
import csv
import json
import os
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from daskhpc.audit import collect, main, probe, render
from daskhpc.audit import synthetic as syn
from daskhpc.audit.licences import denied, licence_of
from daskhpc.audit.render import SCHEMA_PATH, TABLES
from daskhpc.core.site_model import validate

UNTIL = datetime(2024, 6, 1)
AS_OF = UNTIL.astimezone(timezone.utc)


def by_id(report):
    return {f["id"]: f for f in report["findings"]}


def job(user, partition, start, hours, cpus, *, state="COMPLETED"):
    begin = UNTIL - timedelta(days=10) + timedelta(hours=start)
    end = begin + timedelta(hours=hours)
    account = "burst" if partition == "burst" else "research"
    return {"JobID": "%s-%s-%s" % (user, partition, start), "User": user, "Account": account,
            "Partition": partition, "QOS": "burst", "State": state, "Start": begin.strftime("%Y-%m-%dT%H:%M:%S"),
            "End": end.strftime("%Y-%m-%dT%H:%M:%S"), "ElapsedRaw": int(hours * 3600), "AllocCPUS": cpus}


@pytest.fixture(scope="module")
def pems(tmp_path_factory):
    """Deployed certificate files: valid, expired, revoked (in ledger), RSA-1024, SHA-1."""
    out = {}
    out["valid"] = syn.certificate_pem("host-ok", AS_OF - timedelta(days=10), AS_OF + timedelta(days=80))
    out["expired"] = syn.certificate_pem("host-old", AS_OF - timedelta(days=100), AS_OF - timedelta(days=1))
    out["revoked"] = syn.certificate_pem("bob", AS_OF - timedelta(days=2), AS_OF + timedelta(days=5))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    out["rsa1024"] = syn.certificate_pem("weak-rsa", AS_OF - timedelta(days=1), AS_OF + timedelta(days=300), small)
    out["sha1"] = sha1_certificate(tmp_path_factory.mktemp("sha1"))
    return out


def sha1_certificate(directory):
    """cryptography refuses to sign with SHA-1 (rightly), so make the legacy certificate with openssl."""
    import shutil
    import subprocess

    from cryptography import x509
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a SHA-1 certificate")
    cert, key = directory / "c.pem", directory / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha1", "-subj", "/CN=weak-sha1",
                    "-days", "300", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    pem = cert.read_text()
    return pem, "%X" % x509.load_pem_x509_certificate(pem.encode()).serial_number


def lab_inputs(pems, **changes):
    """A small site like the lab, with planted problems; `changes` replace whole inputs."""
    model = syn.site(6)
    valid = validate(model)
    rev_serial = pems["revoked"][1]
    ledger = [
        syn.ledger_line(pems["valid"][1], "CN=host-ok", "ecdsa-p256", AS_OF - timedelta(days=10),
                        AS_OF + timedelta(days=80), profile="host"),
        syn.ledger_line(rev_serial, "CN=bob", "ecdsa-p256", AS_OF - timedelta(days=2), AS_OF + timedelta(days=5)),
        syn.ledger_line("A1", "CN=alice", "ecdsa-p256", AS_OF - timedelta(days=1), AS_OF + timedelta(days=6)),
        syn.ledger_line("B2", "CN=svc-long", "ecdsa-p256", AS_OF - timedelta(days=80), AS_OF + timedelta(days=10),
                        profile="service"),
        syn.ledger_line("C3", "CN=old-rsa", "rsa-1024", AS_OF - timedelta(days=5), AS_OF + timedelta(days=300),
                        profile="host"),
        "this line is not JSON",
        syn.revocation_line(rev_serial, AS_OF - timedelta(days=1)),
    ]
    files = [{"path": "/etc/daskhpc/tls/%s.pem" % k, "pem": pems[k][0]} for k in ("valid", "expired", "rsa1024",
                                                                                  "sha1")]
    files.append({"path": "/home/bob/.daskhpc/tls/user.pem", "pem": pems["revoked"][0]})
    packages = {"numpy": syn.package("numpy", "1.26", "BSD-3-Clause"),
                "gplthing": syn.package("gplthing", "2.0", classifiers=[
                    "License :: OSI Approved :: GNU General Public License v3 (GPLv3)"]),
                "lgplthing": syn.package("lgplthing", "1.0", "LGPL-2.1-or-later"),
                "daskhpc": syn.package("daskhpc", "0.1.0", "GPL-3.0-or-later")}
    jobs = [job("alice", "burst", 0, 2, 4), job("bob", "burst", 1, 1, 2, state="PREEMPTED"),
            job("carol", "prod", 0, 10, 8), job("carol", "prod", -24 * 30, 24 * 30 + 1, 1)]
    inputs = {
        "site": model,
        "inventory": {"ctl": ["slurm_controller"], "login1": ["login"], "n1": ["slurm_compute"]},
        "hosts": {"ctl": syn.host_facts(certificates=files), "login1": syn.host_facts(packages=packages),
                  "n1": {"unavailable": "unreachable"}},
        "scheduler": {"scontrol_partitions": syn.scontrol_text(valid), "sacctmgr_qos": syn.qos_text(valid),
                      "sacctmgr_assoc": syn.assoc_text([("burst", "alice", "", "burst,normal"),
                                                        ("burst", "bob", "", "burst"),
                                                        ("burst", "mallory", "", "burst"),
                                                        ("burst", "ghost", "", "burst"),
                                                        ("research", "carol", "", "normal")]),
                      "sacct": syn.sacct_text(jobs)},
        "directory": {"source": "test", "groups": {"datasci": ["alice", "bob", "dave"], "research": ["carol"]},
                      "users": {"alice": True, "bob": True, "carol": True, "dave": True, "mallory": True,
                                "ghost": False}},
        "ledger": "\n".join(ledger) + "\n",
        "drift": {"plays": [{"play": {"name": "slurm"}, "tasks": [
            {"task": {"name": "Render slurm.conf"}, "hosts": {"ctl": {
                "action": "ansible.builtin.template", "changed": True,
                "diff": [{"before": "A=1\nB=2\n", "after": "A=1\nB=3\n", "before_header": "/etc/slurm/slurm.conf",
                          "after_header": "/etc/slurm/slurm.conf"}]}}},
            {"task": {"name": "Unchanged"}, "hosts": {"ctl": {"action": "ansible.builtin.copy", "changed": False}}},
        ]}], "stats": {"ctl": {"changed": 1}}},
        "collection_version": "0.1.0",
        "period": {"since": (UNTIL - timedelta(days=30)).isoformat(), "until": UNTIL.isoformat()},
        "policy": {},
    }
    inputs.update(changes)
    return inputs


@pytest.fixture(scope="module")
def report(pems):
    return collect(lab_inputs(pems))


# --- policy findings ------------------------------------------------------------------


def test_clean_partitions_give_no_partition_findings(report):
    rules = {f["rule"] for f in report["findings"]}
    assert not rules & {"preemptable-production", "burst-without-limits", "allow-groups-drift", "qos-drift"}


def test_preemptable_production_in_the_scheduler_is_critical(pems):
    valid = validate(syn.site(6))
    scheduler = dict(lab_inputs(pems)["scheduler"],
                     scontrol_partitions=syn.scontrol_text(valid, {"prod": {"PreemptMode": "REQUEUE"}}))
    found = by_id(collect(lab_inputs(pems, scheduler=scheduler)))
    assert found["preemptable-production:prod"]["severity"] == "critical"
    assert "PreemptMode=REQUEUE" in found["preemptable-production:prod"]["detail"]
    assert "preemptable-production:bigmem" not in found


def test_test_site_model_with_a_preemptable_production_partition(pems):
    """A model whose burst tier outranks production: invalid, and the audit says why and how bad."""
    model = syn.site(6)
    model["partitions"][2]["priority_tier"] = 20
    report = collect(lab_inputs(pems, site=model, scheduler={"unavailable": "test: no scheduler"}))
    found = by_id(report)
    assert report["site"]["model_valid"] is False
    assert found["preemptable-production:prod<-burst"]["severity"] == "critical"
    assert found["preemptable-production:bigmem<-burst"]["severity"] == "critical"
    assert found["model-invalid:partitions.burst.priority_tier"]["severity"] == "high"
    assert report["findings"][0]["severity"] == "critical"  # worst first


def test_burst_partition_without_limits(pems):
    valid = validate(syn.site(6))
    scheduler = dict(lab_inputs(pems)["scheduler"],
                     scontrol_partitions=syn.scontrol_text(valid, {"burst": {"QoS": "N/A", "MaxTime": "UNLIMITED"}}))
    finding = by_id(collect(lab_inputs(pems, scheduler=scheduler)))["burst-without-limits:burst"]
    assert finding["severity"] == "high"
    assert "no partition QOS" in finding["detail"] and "MaxTime=UNLIMITED" in finding["detail"]


def test_qos_and_allow_groups_drift(pems):
    valid = validate(syn.site(6))
    scheduler = dict(lab_inputs(pems)["scheduler"],
                     scontrol_partitions=syn.scontrol_text(valid, {"burst": {"AllowGroups": "ALL"}}),
                     sacctmgr_qos=syn.qos_text(valid, {"MaxTRESPU": "cpu=64"}))
    found = by_id(collect(lab_inputs(pems, scheduler=scheduler)))
    assert found["allow-groups-drift:burst"]["severity"] == "high"
    assert "cpu=64" in found["qos-drift:burst"]["detail"]


def test_plaintext_dask_and_ldap_without_tls(pems):
    model = syn.site(6)
    model["dask"] = {"tls": "optional"}
    model["ldap"] = dict(model["ldap"], uri="ldap://ldap.synth", start_tls=False)
    found = by_id(collect(lab_inputs(pems, site=model)))
    assert found["plaintext-dask:dask.tls"]["severity"] == "high"
    assert found["ldap-without-tls:ldap.uri"]["severity"] == "high"
    assert "plaintext-dask:dask.tls" not in by_id(collect(lab_inputs(pems)))


# --- access review ----------------------------------------------------------------------


def test_access_names_members_through_their_group(report):
    burst = {a["user"]: a for a in report["access"] if a["partition"] == "burst"}
    assert burst["alice"]["groups"] == ["datasci"] and burst["alice"]["association"] is True
    assert burst["bob"]["groups"] == ["datasci"]
    assert burst["mallory"]["groups"] == []  # listed only because she holds an association
    assert "carol" not in burst


def test_every_kind_of_mismatch_is_found(report):
    kinds = {(m["partition"], m["user"]): m["kind"] for m in report["access_mismatches"]}
    assert kinds[("burst", "mallory")] == "association without group membership"
    assert kinds[("burst", "ghost")] == "association of a user not in the directory"
    assert kinds[("burst", "dave")] == "member without association"
    assert ("burst", "alice") not in kinds and ("burst", "bob") not in kinds
    # carol's cluster-wide association is how production access works: not a mismatch on bigmem.
    assert ("bigmem", "carol") not in kinds
    found = by_id(report)
    assert found["access-association-of-a-user-not-in-the-directory:burst"]["severity"] == "high"
    assert found["access-association-without-group-membership:burst"]["severity"] == "medium"


def test_missing_group_in_directory(pems):
    directory = {"source": "test", "groups": {"datasci": None, "research": ["carol"]}, "users": {"carol": True}}
    kinds = {(m["partition"], m["kind"]) for m in collect(lab_inputs(pems, directory=directory))["access_mismatches"]}
    assert ("burst", "allowed group not in the directory") in kinds


# --- certificates -------------------------------------------------------------------------


def test_certificate_classification(report, pems):
    certs = {c["id"]: c for c in report["certificates"]}
    files = {c["path"].rsplit("/", 1)[1]: c for c in certs.values() if c["source"] == "file"}
    assert files["valid.pem"]["status"] == "valid" and files["valid.pem"]["in_ledger"]
    assert files["expired.pem"]["status"] == "expired"
    assert files["user.pem"]["status"] == "revoked"  # revoked by a later ledger line
    assert files["rsa1024.pem"]["weak"].startswith("RSA key of 1024 bits")
    assert "SHA-1" in files["sha1.pem"]["weak"]
    ledger = {c["serial"]: c for c in certs.values() if c["source"] == "ledger"}
    assert ledger[pems["revoked"][1]]["revocation_reason"] == "keyCompromise"  # the CA's serial format
    assert ledger["B2"]["status"] == "expiring" and ledger["A1"]["status"] == "expiring"
    assert ledger["C3"]["weak"]


def test_certificate_findings(report):
    found = by_id(report)
    rules = {(f["rule"], f["subject"].rsplit("/", 1)[-1]) for f in report["findings"]}
    assert ("expired-certificate", "expired.pem#0") in rules
    assert ("revoked-certificate-deployed", "user.pem#0") in rules
    assert ("weak-key", "rsa1024.pem#0") in rules and ("weak-key", "sha1.pem#0") in rules
    assert found["expiring-certificate:ledger:B2"]["severity"] == "medium"  # 90-day service certificate
    assert "expiring-certificate:ledger:A1" not in found  # 7-day user credential: renewed automatically
    assert found["weak-key:ledger:C3"]["severity"] == "high"


def test_unreadable_ledger_line_is_reported(report):
    problems = [s for s in report["sources"] if s["status"] == "partial"]
    assert problems and "ledger line 6" in problems[0]["detail"]


# --- usage --------------------------------------------------------------------------------


def test_usage_core_hours_preemptions_and_share(report):
    usage = {(u["user"], u["partition"]): u for u in report["usage"]["by_user_partition"]}
    assert usage[("alice", "burst")]["core_hours"] == 8.0
    assert usage[("bob", "burst")]["preemptions"] == 1
    # carol's long job started 10 days before the period: only the 20 days and 1 hour inside count.
    assert usage[("carol", "prod")]["core_hours"] == pytest.approx(80 + 20 * 24 + 1, abs=0.01)
    parts = {p["partition"]: p for p in report["usage"]["by_partition"]}
    assert parts["burst"]["class"] == "burst" and parts["burst"]["core_hours"] == 10.0
    share = report["usage"]["burst_share"]
    assert len(share) == 30 and report["usage"]["bucket"] == "day"
    day = next(b for b in share if b["burst_core_hours"])
    assert 0 < day["burst_share_percent"] < 100


# --- licences and drift ---------------------------------------------------------------------


def test_licences():
    assert denied("GPL-3.0-only") == "GPL*" and denied("AGPL-3.0") == "AGPL*"
    assert denied("LGPL-2.1") == "" and denied("MIT OR GPL-2.0") == "" and denied("MIT AND GPL-2.0") == "GPL*"
    assert licence_of({"classifiers": ["License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)"]}) \
        == "LGPL-3.0"


def test_denied_licence_findings(report):
    found = by_id(report)
    assert found["denied-licence:login1:gplthing"]["severity"] == "medium"
    assert "denied-licence:login1:lgplthing" not in found
    assert "denied-licence:login1:daskhpc" not in found  # exempt by default
    assert all(p["host"] == "login1" for p in report["packages"])  # login nodes only


def test_drift_lists_changed_tasks_only(report):
    assert [(d["host"], d["task"]) for d in report["drift"]] == [("ctl", "Render slurm.conf")]
    assert "-B=2" in report["drift"][0]["diff"] and "+B=3" in report["drift"][0]["diff"]
    assert by_id(report)["configuration-drift:ctl"]["severity"] == "medium"


# --- degraded sources -----------------------------------------------------------------------


def test_every_source_missing_still_gives_a_report(tmp_path):
    gone = {"unavailable": "test"}
    report = collect({k: gone for k in ("site", "inventory", "hosts", "scheduler", "directory", "ledger",
                                        "drift", "collection_version")})
    assert report["sources"] and all(s["status"] == "not available" for s in report["sources"])
    assert all(f["severity"] == "info" for f in report["findings"])
    written = render(report, str(tmp_path))
    assert os.path.getsize(written["html"][0]) > 1000
    jsonschema.validate(json.loads(open(written["json"][0]).read()), json.load(open(SCHEMA_PATH)))


def test_unreachable_host_is_recorded(report):
    n1 = next(h for h in report["inventory"] if h["host"] == "n1")
    assert n1["roles"] == ["slurm_compute"] and n1["slurm"] == ""
    assert any(s["source"] == "host_facts:n1" and "unreachable" in s["detail"] for s in report["sources"])


# --- renderers --------------------------------------------------------------------------------


def _stamped(report, when):
    stamped = copy.deepcopy(report)
    stamped["generated_at"] = when
    return stamped


def test_reproducible_apart_from_the_timestamp(pems, tmp_path):
    first = render(_stamped(collect(lab_inputs(pems)), "2024-06-01T10:00:00Z"), str(tmp_path / "a"))
    second = render(_stamped(collect(lab_inputs(pems)), "2024-06-02T11:11:11Z"), str(tmp_path / "b"))
    compared = 0
    for fmt, paths in first.items():
        for a, b in zip(paths, second[fmt]):
            text_a, text_b = open(a).read(), open(b).read()
            assert text_a != text_b or fmt == "csv"
            assert text_a.replace("2024-06-01T10:00:00Z", "T") == text_b.replace("2024-06-02T11:11:11Z", "T"), a
            compared += 1
    assert compared == 3 + len(TABLES)


def test_json_validates_against_the_shipped_schema(report, tmp_path):
    schema = json.load(open(SCHEMA_PATH))
    jsonschema.Draft202012Validator.check_schema(schema)
    data = json.load(open(render(copy.deepcopy(report), str(tmp_path), ["json"])["json"][0]))
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    data["findings"][0]["severity"] = "catastrophic"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


def test_every_csv_parses_with_its_columns(report, tmp_path):
    paths = render(copy.deepcopy(report), str(tmp_path), ["csv"])["csv"]
    assert len(paths) == len(TABLES)
    for (name, _section, _title, columns, rows), path in zip(TABLES, paths):
        with open(path, newline="") as handle:
            parsed = list(csv.reader(handle))
        assert parsed[0] == columns, name
        assert len(parsed) - 1 == len(rows(report)), name
        assert all(len(r) == len(columns) for r in parsed), name


def test_html_is_self_contained_with_every_section(report, tmp_path):
    html = open(render(copy.deepcopy(report), str(tmp_path), ["html"])["html"][0]).read()
    for section in ("summary", "findings", "inventory", "partitions", "access", "certificates", "usage", "drift",
                    "packages", "sources"):
        assert '<section id="%s">' % section in html
    assert html.count("<svg") == 4 and "@media print" in html
    for external in ("<script", "<link", "src=", "http://", "@import", "url("):
        assert external not in html.replace("http://www.w3.org/2000/svg", "")


def test_markdown_tables_are_well_formed(report):
    from daskhpc.audit.render import to_markdown
    md = to_markdown(copy.deepcopy(report))
    assert "## Access review" in md and "| burst | burst | alice | datasci | yes | yes |" in md
    for line in md.splitlines():
        if line.startswith("| severity |"):
            assert line.count("|") == 7


# --- CLI and probe --------------------------------------------------------------------------


def test_cli_from_files_without_live_sources(pems, tmp_path):
    inputs = lab_inputs(pems)
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(inputs))
    out = tmp_path / "reports"
    assert main(["--facts", str(facts), "--output", str(out), "--no-live", "--formats", "json,md"]) == 0
    data = json.load(open(out / "audit-report.json"))
    assert data["period"]["until"] == UNTIL.isoformat() and (out / "audit-report.md").exists()
    assert not (out / "audit-report.html").exists()
    assert main(["--facts", str(facts), "--output", str(out), "--formats", "pdf"]) == 2


def test_cli_site_model_file_and_period(tmp_path):
    model = tmp_path / "site.yml"
    model.write_text(json.dumps({"daskhpc_site": syn.site(6)}))
    out = tmp_path / "r"
    assert main(["--site-model", str(model), "--no-live", "--output", str(out), "--since", "2024-01-01",
                 "--until", "2024-01-31", "--formats", "json"]) == 0
    data = json.load(open(out / "audit-report.json"))
    assert data["site"]["name"] == "synth" and data["period"]["until"] == "2024-01-31T23:59:59"
    assert main(["--site-model", str(model), "--no-live", "--output", str(out), "--since", "2024-02-01",
                 "--until", "2024-01-01"]) == 2


@pytest.mark.parametrize("site", [
    [{"name": "synth"}],
    "synth",
    {"name": ["synth"], "node_groups": [5, {"name": ["x"]}, {"name": "c", "nodes": "n[1-12000000]"}],
     "partitions": [3, {"name": {"a": 1}}, {"name": "p", "node_groups": [["c"]], "allow_groups": "datasci",
                                            "priority_tier": True}],
     "groups": "datasci", "burst": {"qos": ["burst"], "per_user": 5}, "dask": [], "ldap": {"uri": 5}},
], ids=["list", "string", "wrong-types-everywhere"])
def test_an_invalid_model_of_any_shape_is_reported_not_a_crash(pems, site):
    data = collect(lab_inputs(pems, site=site))
    assert data["site"]["model_valid"] is False


def test_cli_refuses_a_billion_laughs_site_file(tmp_path):
    model = tmp_path / "site.yml"
    model.write_text("daskhpc_site:\n  a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        "  a%d: &a%d [%s]\n" % (i, i, ",".join(["*a" if i == 1 else "*a%d" % (i - 1)] * 9)) for i in range(1, 9)))
    out = tmp_path / "r"
    assert main(["--site-model", str(model), "--no-live", "--output", str(out), "--since", "2024-01-01",
                 "--until", "2024-01-31", "--formats", "json"]) == 0
    data = json.load(open(out / "audit-report.json"))
    assert data["site"]["model_valid"] is False
    assert "YAML aliases" in json.dumps(data)


def test_probe_scans_certificates_but_never_keys(tmp_path, pems):
    (tmp_path / "host.pem").write_text(pems["valid"][0])
    (tmp_path / "host.key").write_text("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    (tmp_path / "combined.pem").write_text(pems["valid"][0] + "-----BEGIN PRIVATE KEY-----\nxx\n")
    found = probe.scan_certificates(str(tmp_path), user_homes=[])
    assert [os.path.basename(f["path"]) for f in found] == ["host.pem"]
    assert probe.run(["/nonexistent/tool"]) == {"unavailable": "/nonexistent/tool is not installed"}


def test_controller_commands_that_cannot_run_become_unavailable_with_the_reason(monkeypatch):
    from daskhpc import audit

    monkeypatch.setenv("PATH", "/nonexistent")
    assert audit.run_check_mode("site.yml", None) == {"unavailable": "ansible-playbook: command not found"}
    _model, inventory, _local = audit._from_inventory("/nonexistent/inventory")
    assert inventory == {"unavailable": "ansible-inventory failed: ansible-inventory: command not found"}


@pytest.mark.skipif(os.geteuid() != 0, reason="the probe runs as root; the attack needs root to test")
@pytest.mark.timeout(20)
def test_probe_never_follows_a_users_path(tmp_path, pems):
    """As root, the probe reads users' ~/.daskhpc/tls: a symlink to root's directory, a link to root's
    file or a FIFO there is reported, never followed, never waited on."""
    secret = tmp_path / "rootonly"
    secret.mkdir(mode=0o700)
    (secret / "ca.pem").write_text(pems["valid"][0])
    homes = {}
    for name, uid in (("alice", 10001), ("mallory", 10004), ("eve", 10005), ("trudy", 10006)):
        home = tmp_path / name
        (home / ".daskhpc").mkdir(parents=True)
        for path in (home, home / ".daskhpc"):
            os.chown(path, uid, uid)
        homes[name] = home
    tls = homes["alice"] / ".daskhpc" / "tls"
    tls.mkdir()
    (tls / "user.pem").write_text(pems["valid"][0])
    for path in (tls, tls / "user.pem"):
        os.chown(path, 10001, 10001)
    (homes["mallory"] / ".daskhpc" / "tls").symlink_to(secret)
    tls = homes["eve"] / ".daskhpc" / "tls"
    tls.mkdir()
    os.chown(tls, 10005, 10005)
    os.mkfifo(tls / "user.pem")
    os.chown(tls / "user.pem", 10005, 10005)
    tls = homes["trudy"] / ".daskhpc" / "tls"
    tls.mkdir()
    os.chown(tls, 10006, 10006)
    os.link(secret / "ca.pem", tls / "user.pem")
    scanned = probe.scan_certificates(str(tmp_path / "none"), user_homes=[str(h) for h in homes.values()])
    found = {f["path"][len(str(tmp_path)) + 1:].split("/")[0]: f for f in scanned}
    assert found["alice"]["pem"] == pems["valid"][0]
    assert "pem" not in found["mallory"] and "not read" in found["mallory"]["error"]
    assert "pem" not in found["eve"] and "not a regular file" in found["eve"]["error"]
    assert "pem" not in found["trudy"] and "owned by uid 0" in found["trudy"]["error"]


def test_access_review_says_through_which_nested_group(pems):
    """From LDAP the directory side carries the chain of groups (daskhpc/audit/directory.py, effective_members)."""
    directory = {"source": "ldap", "groups": {"datasci": ["alice", "bob"], "research": ["carol"]},
                 "via": {"datasci": {"alice": ["datasci"], "bob": ["datasci", "ml-team"]}},
                 "users": {"alice": True, "bob": True, "carol": True}}
    burst = {a["user"]: a for a in collect(lab_inputs(pems, directory=directory))["access"]
             if a["partition"] == "burst"}
    assert burst["alice"]["groups"] == ["datasci"]
    assert burst["bob"]["groups"] == ["datasci via ml-team"]
