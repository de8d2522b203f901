"""The PKI modules, roles and playbooks through real ansible-playbook runs on the lab host."""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
from cryptography import x509

REPO = Path(__file__).resolve().parents[2]
LAB_PASSPHRASE = "lab-ca-passphrase-not-secret"
pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def playbook(*args):
    env = dict(os.environ, PATH="%s:%s" % (REPO / ".venv" / "bin", os.environ.get("PATH", "")),
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PYTHONPATH=str(REPO / ".collections"),
               ANSIBLE_NOCOLOR="1")
    out = subprocess.run(["ansible-playbook", "-i", str(REPO / "inventories" / "lab"), *args], cwd=REPO, env=env,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    return out.stdout + out.stderr


def changed(output):
    return int(re.search(r"localhost\s*:.*changed=(\d+)", output).group(1))


def serial(path):
    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read()).serial_number


def ledger_lines(ca_dir):
    path = Path(ca_dir) / "ledger.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def test_pki_playbook_converges_then_changes_nothing():
    playbook("playbooks/pki.yml")
    before = {name: serial("/etc/daskhpc/tls/%s.pem" % name) for name in ("host", "slapd")}
    lines = ledger_lines("/etc/daskhpc/ca")
    assert changed(playbook("playbooks/pki.yml")) == 0
    assert {name: serial("/etc/daskhpc/tls/%s.pem" % name) for name in ("host", "slapd")} == before
    assert ledger_lines("/etc/daskhpc/ca") == lines
    key = os.stat("/etc/daskhpc/tls/slapd.key")
    assert stat.S_IMODE(key.st_mode) == 0o600 and pwd.getpwuid(key.st_uid).pw_name == "openldap"
    assert stat.S_IMODE(os.stat("/etc/daskhpc/ca").st_mode) == 0o700
    assert Path("/usr/local/share/ca-certificates/daskhpc-lab.crt").read_bytes() == \
        Path("/etc/daskhpc/ca/root.pem").read_bytes()
    assert Path("/etc/ssl/certs/daskhpc-lab.pem").exists()  # update-ca-certificates ran
    verify = subprocess.run(["openssl", "verify", "-CApath", "/etc/ssl/certs", "-untrusted",
                             "/etc/daskhpc/tls/slapd.pem", "/etc/daskhpc/tls/slapd.pem"],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr  # trusted through the system store


@pytest.fixture(scope="module")
def lab_users():
    users = []
    for name in ("alice", "bob"):
        try:
            users.append(pwd.getpwnam(name))
        except KeyError:
            pytest.skip("lab users alice and bob are not resolvable yet (run playbooks/identity.yml)")
    return users


def test_user_credentials_owned_by_user_and_stable(lab_users):
    extra = json.dumps({"user_credentials_users": [u.pw_name for u in lab_users]})
    playbook("playbooks/pki.yml", "--tags", "ca")
    playbook("playbooks/user_credentials.yml", "-e", extra)
    paths = {u.pw_name: Path(u.pw_dir) / ".daskhpc" / "tls" for u in lab_users}
    serials = {name: serial(path / "user.pem") for name, path in paths.items()}
    assert changed(playbook("playbooks/user_credentials.yml", "-e", extra)) == 0
    assert {name: serial(path / "user.pem") for name, path in paths.items()} == serials
    for user in lab_users:
        directory = paths[user.pw_name]
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        for name in ("user.pem", "user.key"):
            st = os.stat(directory / name)
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, user.pw_uid)
        cert = x509.load_pem_x509_certificate((directory / "user.pem").read_bytes())
        assert cert.subject.rfc4514_string() == "CN=%s,OU=users" % user.pw_name
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert days == 7  # daskhpc_site.ca.user_cert_days (plus the 5-minute clock-skew margin)


def test_certificate_inside_renewal_window_is_reissued(tmp_path):
    book = tmp_path / "renew.yml"
    book.write_text(textwrap.dedent("""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: CA
              onprem.daskhpc.ca: {ca_dir: "{{ d }}/ca", name: renew CA, passphrase: "{{ daskhpc_ca_passphrase }}"}
            - name: Leaf
              onprem.daskhpc.certificate:
                ca_dir: "{{ d }}/ca"
                ca_passphrase: "{{ daskhpc_ca_passphrase }}"
                path: "{{ d }}/leaf.pem"
                subject: {CN: leaf.example.org}
                subject_alt_names: [leaf.example.org]
                days: "{{ days | int }}"
                renew_before_days: "{{ before | int }}"
        """))
    common = [str(book), "-e", "d=%s" % tmp_path]
    playbook(*common, "-e", "days=3", "-e", "before=1")
    first = serial(tmp_path / "leaf.pem")
    assert changed(playbook(*common, "-e", "days=3", "-e", "before=1")) == 0
    assert serial(tmp_path / "leaf.pem") == first
    # the same certificate, now with a policy of renewing 5 days ahead: it is inside the window
    assert changed(playbook(*common, "-e", "days=7", "-e", "before=5")) == 1
    assert serial(tmp_path / "leaf.pem") != first
    assert len(ledger_lines(tmp_path / "ca")) == 2


def test_no_key_material_or_passphrase_in_vvv_output(tmp_path):
    extra = json.dumps({"ca_dir": str(tmp_path / "ca"), "pki_client_ca_dir": str(tmp_path / "ca"),
                        "pki_client_tls_dir": str(tmp_path / "tls"),
                        "pki_client_trust_dir": str(tmp_path / "trust")})
    (tmp_path / "trust").mkdir()
    output = playbook("playbooks/pki.yml", "-vvv", "-e", extra)
    keys = [p for p in (tmp_path / "tls").iterdir() if p.suffix == ".key"]
    assert len(keys) >= 2  # key material really moved during this run
    assert "PRIVATE KEY" not in output
    assert base64.b64encode(b"-----BEGIN PRIVATE KEY")[:20].decode() not in output
    assert base64.b64encode(b"-----BEGIN ENCRYPTED PRIVATE KEY")[:20].decode() not in output
    assert LAB_PASSPHRASE not in output
    for key in keys:
        body = "".join(key.read_text().splitlines()[1:-1])
        assert body[:40] not in output and base64.b64encode(key.read_bytes()).decode()[:40] not in output


def test_slapd_serves_ldaps_with_the_issued_certificate():
    """slapd (LDAP helper's ldap_server role) uses /etc/daskhpc/tls/slapd.pem; clients verify it against the bundle."""
    import socket
    import ssl

    import ldap3

    try:
        socket.create_connection(("127.0.0.1", 636), timeout=3).close()
    except OSError:
        pytest.skip("slapd is not serving LDAPS yet (run playbooks/identity.yml)")
    ctx = ssl.create_default_context(cafile="/etc/daskhpc/tls/ca.pem")
    with socket.create_connection(("127.0.0.1", 636), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    assert served.serial_number == serial("/etc/daskhpc/tls/slapd.pem")
    server = ldap3.Server("ldaps://127.0.0.1:636", use_ssl=True,
                          tls=ldap3.Tls(ca_certs_file="/etc/daskhpc/tls/ca.pem", validate=ssl.CERT_REQUIRED))
    with ldap3.Connection(server, "cn=reader,dc=lab,dc=daskhpc", "lab-ldap-reader-not-secret",
                          auto_bind=True) as conn:
        assert conn.extend.standard.who_am_i()
