"""`daskhpc doctor`: each check passes on a good set-up and fails with a fix on a broken one."""

from __future__ import annotations

import datetime
import grp
import json
import os
import pwd
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daskhpc.doctor import Doctor, render

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.timezone.utc)
USER = pwd.getpwuid(os.geteuid()).pw_name


def make_cert(path, cn, *, issuer_key=None, issuer_name=None, days=7, ca=False):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    (path / (cn + ".pem")).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = path / (cn + ".key")
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return key, name


@pytest.fixture()
def tls(tmp_path):
    ca_key, ca_name = make_cert(tmp_path, "site-ca", ca=True, days=365)
    make_cert(tmp_path, USER, issuer_key=ca_key, issuer_name=ca_name)
    return {"mode": "required", "ca": str(tmp_path / "site-ca.pem"), "cert": str(tmp_path / (USER + ".pem")),
            "key": str(tmp_path / (USER + ".key"))}


def config(tls, tmp_path, **overrides):
    cfg = {"site": "lab", "partition": "burst", "qos": "burst", "account": "burst", "python": sys.executable,
           "allowed-groups": [], "tls": tls, "interface": None, "metrics-targets-dir": str(tmp_path),
           "contact": "hpc-help@lab.example"}
    cfg.update(overrides)
    return cfg


def runner(**outputs):
    """A stand-in for command.run: first word of the command -> (rc, stdout, stderr)."""
    calls = []

    def run(command, timeout=30):
        calls.append(command)
        return outputs.get(os.path.basename(command[0]), (0, "", ""))
    run.calls = calls
    return run


GOOD = {"sinfo": (0, "up|6|8/40/0/48\n", ""), "sacctmgr": (0, "%s|burst|burst\n" % USER, "")}


def by_name(results):
    return {c.name: c for c in results}


def test_everything_passes_on_a_good_setup(tls, tmp_path):
    doctor = Doctor(config=config(tls, tmp_path), user=USER, run=runner(**GOOD), now=NOW)
    results = by_name(doctor.checks())
    assert all(c.ok for c in results.values()), render(results.values(), USER, doctor.config)
    assert "partition burst is up" in results["batch system"].detail
    assert results["certificates"].detail.startswith("CN=%s, valid until 2026-11-30" % USER)


def test_unconfigured_site_stops_with_the_role_as_fix(tmp_path):
    results = Doctor(config={"site": None, "partition": None}, user=USER, run=runner(), now=NOW).checks()
    assert len(results) == 1 and not results[0].ok and "dask_client role" in results[0].fix


def test_batch_system_down(tls, tmp_path):
    run = runner(sinfo=(1, "", "slurm_load_partitions: Unable to contact slurm controller"))
    check = by_name(Doctor(config=config(tls, tmp_path), user=USER, run=run, now=NOW).checks())["batch system"]
    assert not check.ok and "Unable to contact" in check.detail and "scontrol ping" in check.fix


def test_partition_down_or_missing(tls, tmp_path):
    for out, words in (("down|6|0/0/48/48\n", "is down"), ("", "does not exist")):
        run = runner(sinfo=(0, out, ""), sacctmgr=GOOD["sacctmgr"])
        check = by_name(Doctor(config=config(tls, tmp_path), user=USER, run=run, now=NOW).checks())["batch system"]
        assert not check.ok and words in check.detail


def test_user_outside_the_allowed_groups(tls, tmp_path):
    doctor = Doctor(config=config(tls, tmp_path, **{"allowed-groups": ["no-such-group-xyz"]}), user=USER,
                    run=runner(**GOOD), now=NOW)
    check = by_name(doctor.checks())["burst access"]
    assert not check.ok and "none of the allowed groups no-such-group-xyz" in check.detail
    assert "hpc-help@lab.example" in check.fix and "no-such-group-xyz" in check.fix


def test_missing_association_and_missing_qos(tls, tmp_path):
    for out, words in (("", "has no association"), ("%s|burst|normal\n" % USER, "lacks QOS burst")):
        run = runner(sinfo=GOOD["sinfo"], sacctmgr=(0, out, ""))
        check = by_name(Doctor(config=config(tls, tmp_path), user=USER, run=run, now=NOW).checks())
        assert not check["burst association"].ok and words in check["burst association"].detail


def test_certificate_problems(tls, tmp_path):
    os.chmod(tls["key"], 0o644)
    check = by_name(Doctor(config=config(tls, tmp_path), user=USER, run=runner(**GOOD), now=NOW).checks())
    assert "readable by others" in check["certificates"].detail and check["certificates"].fix.startswith("chmod 600")
    os.chmod(tls["key"], 0o600)
    later = NOW + datetime.timedelta(days=8)
    check = by_name(Doctor(config=config(tls, tmp_path), user=USER, run=runner(**GOOD), now=later).checks())
    assert not check["certificates"].ok and "expired" in check["certificates"].detail
    other = Doctor(config=config(tls, tmp_path), user="someone-else", run=runner(**GOOD), now=NOW).check_tls()
    assert not other.ok and "not someone-else" in other.detail


def test_certificate_from_another_ca_fails(tls, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    key, name = make_cert(other, "rogue-ca", ca=True)
    make_cert(other, USER, issuer_key=key, issuer_name=name)
    tls = dict(tls, cert=str(other / (USER + ".pem")), key=str(other / (USER + ".key")))
    check = Doctor(config=config(tls, tmp_path), user=USER, run=runner(**GOOD), now=NOW).check_tls()
    assert not check.ok and "not signed by the site CA" in check.detail


def test_missing_credential_only_fails_when_tls_is_required(tmp_path):
    tls = {"mode": "optional", "ca": "/nonexistent", "cert": "/nonexistent", "key": "/nonexistent"}
    assert Doctor(config=config(tls, tmp_path), user=USER, run=runner(**GOOD), now=NOW).check_tls().ok
    check = Doctor(config=config(dict(tls, mode="required"), tmp_path), user=USER, run=runner(**GOOD),
                   now=NOW).check_tls()
    assert not check.ok and "user_credentials" in check.fix


def test_unknown_interface_and_missing_metrics_dir(tls, tmp_path):
    doctor = Doctor(config=config(tls, tmp_path, interface="nosuchif0", **{"metrics-targets-dir": "/nonexistent/x"}),
                    user=USER, run=runner(**GOOD), now=NOW)
    results = by_name(doctor.checks())
    assert not results["connectivity"].ok and "nosuchif0" in results["connectivity"].detail
    assert not results["metrics discovery"].ok


def test_render_shows_pass_fail_and_fix(tls, tmp_path):
    doctor = Doctor(config=config(tls, tmp_path, **{"allowed-groups": ["no-such-group-xyz"]}), user=USER,
                    run=runner(**GOOD), now=NOW)
    text = render(doctor.checks(), USER, doctor.config)
    assert "FAIL  burst access" in text and "fix: ask hpc-help@lab.example" in text
    assert text.splitlines()[-1].endswith("1 failed")


def test_a_stuck_command_fails_its_check_instead_of_hanging(tls, tmp_path, monkeypatch):
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sinfo", "sacctmgr"):
        script = bin_dir / name
        script.write_text("#!/bin/sh\nsleep 300\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ["PATH"]))
    started = time.monotonic()
    results = by_name(Doctor(config=config(tls, tmp_path), user=USER, now=NOW, timeout=1).checks())
    assert time.monotonic() - started < 20
    assert not results["batch system"].ok and "no answer within 1s" in results["batch system"].detail
    assert not results["burst association"].ok and "no answer within 1s" in results["burst association"].detail


def test_doctor_commands_run_without_slurm_variables(tls, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "sinfo"
    script.write_text("#!/bin/sh\nenv > %s/env\necho 'up|6|8/40/0/48'\n" % tmp_path)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ["PATH"]))
    monkeypatch.setenv("SLURM_CONF", "/tmp/other-cluster.conf")
    assert Doctor(config=config(tls, tmp_path), user=USER, now=NOW).check_batch().ok
    assert "SLURM_CONF" not in (tmp_path / "env").read_text()


def test_an_unsafe_site_file_fails_the_configuration_check(tmp_path):
    from client_helpers import lab_config, site_file

    with site_file(tmp_path, lab_config()) as path:
        os.chmod(path, 0o666)
        results = Doctor(user=USER, run=runner(**GOOD), now=NOW).checks()
    assert len(results) == 1 and not results[0].ok
    assert "writable only by it" in results[0].detail and "dask_client role" in results[0].fix


# --- PBS: the queue, as the PBS server has it -------------------------------------------------------------

def pbs_queue(**attrs):
    queue = {"queue_type": "Execution", "state_count": "Transit:0 Queued:2 Held:0 Waiting:0 Running:1 Exiting:0 ",
             "enabled": "True", "started": "True", "acl_group_enable": "True",
             "acl_groups": "datasci,%s" % grp.getgrgid(os.getgid()).gr_name}
    queue.update(attrs)
    return (0, json.dumps({"pbs_version": "23.06.06", "Queue": {"burst": queue}}), "")


def batch_calls(run):
    """The batch system's commands the doctor ran (not the Python checks)."""
    return [c for c in run.calls if os.path.basename(c[0]) in ("qstat", "sinfo", "sacctmgr", "squeue")]


def pbs_doctor(tls, tmp_path, **outputs):
    run = runner(**outputs)
    return Doctor(config=config(tls, tmp_path, scheduler="pbs"), user=USER, run=run, now=NOW), run


def test_pbs_site_checks_its_queue_and_never_runs_slurm_commands(tls, tmp_path):
    doctor, run = pbs_doctor(tls, tmp_path, qstat=pbs_queue())
    results = by_name(doctor.checks())
    assert all(c.ok for c in results.values()), render(results.values(), USER, doctor.config)
    assert "burst association" not in results and "queue access" in results
    assert results["batch system"].detail == "queue burst is enabled and started: " \
                                             "Transit:0 Queued:2 Held:0 Waiting:0 Running:1 Exiting:0"
    batch = batch_calls(run)
    assert [os.path.basename(c[0]) for c in batch] == ["qstat"], run.calls  # asked once, for both checks
    assert batch[0][1:] == ["-Q", "-f", "-F", "json", "burst"]


@pytest.mark.parametrize("attrs,words", [({"enabled": "False"}, "is disabled"), ({"started": "False"}, "is stopped")])
def test_pbs_queue_disabled_or_stopped(tls, tmp_path, attrs, words):
    doctor, _run = pbs_doctor(tls, tmp_path, qstat=pbs_queue(**attrs))
    check = by_name(doctor.checks())["batch system"]
    assert not check.ok and words in check.detail and "hpc-help@lab.example" in check.fix


def test_pbs_queue_missing(tls, tmp_path):
    doctor, _run = pbs_doctor(tls, tmp_path, qstat=(2, "", "qstat: Unknown queue burst\n"))
    results = by_name(doctor.checks())
    assert not results["batch system"].ok and "queue burst does not exist" in results["batch system"].detail
    assert not results["queue access"].ok


def test_pbs_user_outside_the_queues_groups_is_told_which_groups(tls, tmp_path):
    doctor, _run = pbs_doctor(tls, tmp_path, qstat=pbs_queue(acl_groups="no-such-group-xyz,other-xyz"))
    check = by_name(doctor.checks())["queue access"]
    assert not check.ok and "admits only no-such-group-xyz, other-xyz" in check.detail
    assert "hpc-help@lab.example" in check.fix and "no-such-group-xyz, other-xyz" in check.fix


def test_pbs_server_down_fails_both_checks_with_one_question(tls, tmp_path):
    doctor, run = pbs_doctor(tls, tmp_path, qstat=(1, "", "Connection refused\nqstat: cannot connect to server pbs"))
    results = by_name(doctor.checks())
    for name in ("batch system", "queue access"):
        assert not results[name].ok and "cannot connect" in results[name].detail and "qstat -B" in results[name].fix
    assert len(batch_calls(run)) == 1
