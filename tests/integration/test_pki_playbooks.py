"""The PKI modules, roles and playbooks through real ansible-playbook runs on the lab's hosts.

The CA lives on the ca host (svc); every host trusts it and holds its host certificate, svc also
slapd's and Prometheus's. Files are read on the host that has them.
"""

from __future__ import annotations

import base64
import json
import textwrap

import pytest
from cryptography import x509
from ldap_helpers import ldap_settings, secrets

from conftest import HOSTS, adhoc, inventory_group, read_file, run_playbook, sh

LAB_PASSPHRASE = "lab-ca-passphrase-not-secret"
CA_HOST = inventory_group("ca")[0]               # svc
LDAP_HOST = inventory_group("ldap_server")[0]    # svc
CA_DIR = "/etc/daskhpc/ca"
TLS_DIR = "/etc/daskhpc/tls"
# The lab converge can take long; the timeout is for the test itself.
pytestmark = [pytest.mark.lab, pytest.mark.timeout(900, func_only=True), pytest.mark.usefixtures("lab")]


def playbook(*args):
    run = run_playbook(*args)
    assert run.rc == 0, run.output[-6000:]
    return run


def serial(host, path):
    return x509.load_pem_x509_certificate(read_file(host, path)).serial_number


def ledger_lines(host, ca_dir):
    try:
        return read_file(host, "%s/ledger.jsonl" % ca_dir).decode().splitlines()
    except FileNotFoundError:
        return []


def deployed_serials():
    """Serials of every host's host certificate and of the service certificates on svc."""
    serials = {(host, "host"): serial(host, TLS_DIR + "/host.pem") for host in HOSTS}
    serials[(LDAP_HOST, "slapd")] = serial(LDAP_HOST, TLS_DIR + "/slapd.pem")
    return serials


def test_pki_playbook_converges_then_changes_nothing(lab_hosts):
    playbook("pki.yml")
    before = deployed_serials()
    lines = ledger_lines(CA_HOST, CA_DIR)
    assert playbook("pki.yml").changed == 0
    assert deployed_serials() == before
    assert ledger_lines(CA_HOST, CA_DIR) == lines
    key = adhoc(lab_hosts, LDAP_HOST, "stat", path=TLS_DIR + "/slapd.key")[LDAP_HOST]["stat"]
    assert key["mode"] == "0600" and key["pw_name"] == "openldap"
    assert adhoc(lab_hosts, CA_HOST, "stat", path=CA_DIR)[CA_HOST]["stat"]["mode"] == "0700"
    root = read_file(CA_HOST, CA_DIR + "/root.pem")
    for host in HOSTS:  # every host trusts the site root through the system store
        assert read_file(host, "/usr/local/share/ca-certificates/daskhpc-lab.crt") == root, host
    stores = adhoc(lab_hosts, "all", "stat", path="/etc/ssl/certs/daskhpc-lab.pem")
    assert {host for host, r in stores.items() if r["stat"]["exists"]} == set(HOSTS)  # update-ca-certificates ran
    verify = sh("openssl", "verify", "-CApath", "/etc/ssl/certs", "-untrusted", TLS_DIR + "/slapd.pem",
                TLS_DIR + "/slapd.pem", host=LDAP_HOST, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr  # trusted through the system store


@pytest.fixture(scope="module")
def lab_users():
    """(name, uid, home) of alice and bob, as the login host resolves them."""
    users = []
    for name in ("alice", "bob"):
        entry = sh("getent", "passwd", name, host="login", check=False)
        if entry.returncode != 0:
            pytest.skip("lab users alice and bob are not resolvable yet (run playbooks/identity.yml)")
        fields = entry.stdout.strip().split(":")
        users.append((fields[0], int(fields[2]), fields[5]))
    return users


def test_user_credentials_owned_by_user_and_stable(lab_users, lab_hosts):
    extra = json.dumps({"user_credentials_users": [name for name, _uid, _home in lab_users]})
    playbook("pki.yml", "--tags", "ca")
    playbook("user_credentials.yml", "-e", extra)
    paths = {name: "%s/.daskhpc/tls" % home for name, _uid, home in lab_users}
    # The homes are shared: read where the user works.
    serials = {name: serial("login", path + "/user.pem") for name, path in paths.items()}
    assert playbook("user_credentials.yml", "-e", extra).changed == 0
    assert {name: serial("login", path + "/user.pem") for name, path in paths.items()} == serials
    for name, uid, _home in lab_users:
        directory = paths[name]
        assert adhoc(lab_hosts, "login", "stat", path=directory)["login"]["stat"]["mode"] == "0700"
        for leaf in ("user.pem", "user.key"):
            st = adhoc(lab_hosts, "login", "stat", path=directory + "/" + leaf)["login"]["stat"]
            assert (st["mode"], st["uid"]) == ("0600", uid), (name, leaf)
        cert = x509.load_pem_x509_certificate(read_file("login", directory + "/user.pem"))
        assert cert.subject.rfc4514_string() == "CN=%s,OU=users" % name
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert days == 7  # daskhpc_site.ca.user_cert_days (plus the 5-minute clock-skew margin)


@pytest.fixture
def ca_tmpdir():
    """A scratch directory on the CA host."""
    path = sh("mktemp", "-d", "/tmp/daskhpc-it-pki-XXXXXX", host=CA_HOST).stdout.strip()
    yield path
    sh("rm", "-rf", path, host=CA_HOST, check=False)


def test_certificate_inside_renewal_window_is_reissued(tmp_path, ca_tmpdir):
    book = tmp_path / "renew.yml"
    # On the CA host, in the interpreter the CA's modules use there (cryptography >= 42).
    book.write_text(textwrap.dedent("""\
        - hosts: ca
          gather_facts: false
          vars:
            ansible_python_interpreter: "{{ daskhpc_pki_python | default('/opt/daskhpc/venv/bin/python') }}"
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
    common = [str(book), "-e", "d=%s" % ca_tmpdir]
    playbook(*common, "-e", "days=3", "-e", "before=1")
    first = serial(CA_HOST, ca_tmpdir + "/leaf.pem")
    assert playbook(*common, "-e", "days=3", "-e", "before=1").changed == 0
    assert serial(CA_HOST, ca_tmpdir + "/leaf.pem") == first
    # the same certificate, now with a policy of renewing 5 days ahead: it is inside the window
    assert playbook(*common, "-e", "days=7", "-e", "before=5").changed == 1
    assert serial(CA_HOST, ca_tmpdir + "/leaf.pem") != first
    assert len(ledger_lines(CA_HOST, ca_tmpdir + "/ca")) == 2


@pytest.fixture
def scratch_everywhere():
    """The same fresh scratch path on every host (the play's extra vars name one path for all)."""
    path = sh("mktemp", "-d", "-u", "/tmp/daskhpc-it-vvv-XXXXXX", host=CA_HOST).stdout.strip()
    for host in HOSTS:
        sh("mkdir", "-p", path + "/trust", host=host)
    yield path
    for host in HOSTS:
        sh("rm", "-rf", path, host=host, check=False)


def test_no_key_material_or_passphrase_in_vvv_output(scratch_everywhere):
    base = scratch_everywhere
    extra = json.dumps({"ca_dir": base + "/ca", "pki_client_ca_dir": base + "/ca",
                        "pki_client_tls_dir": base + "/tls", "pki_client_trust_dir": base + "/trust"})
    output = playbook("pki.yml", "-vvv", "-e", extra).output
    keys = {}
    for host in HOSTS:
        names = sh("find", base + "/tls", "-name", "*.key", host=host, check=False).stdout.split()
        keys.update({(host, name): read_file(host, name) for name in names})
    assert len(keys) >= len(HOSTS) + 1  # key material really moved during this run: every host's, slapd's
    assert "PRIVATE KEY" not in output
    assert base64.b64encode(b"-----BEGIN PRIVATE KEY")[:20].decode() not in output
    assert base64.b64encode(b"-----BEGIN ENCRYPTED PRIVATE KEY")[:20].decode() not in output
    assert LAB_PASSPHRASE not in output
    for key in keys.values():
        body = "".join(key.decode().splitlines()[1:-1])
        assert body[:40] not in output and base64.b64encode(key).decode()[:40] not in output


LDAPS_CHECK = textwrap.dedent("""\
    import json, socket, ssl, sys
    import ldap3
    host, ca, bind_dn = sys.argv[1:4]
    password = sys.stdin.read().strip()
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((host, 636), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    server = ldap3.Server("ldaps://%s:636" % host, use_ssl=True,
                          tls=ldap3.Tls(ca_certs_file=ca, validate=ssl.CERT_REQUIRED))
    with ldap3.Connection(server, bind_dn, password, auto_bind=True) as conn:
        whoami = conn.extend.standard.who_am_i()
    print(json.dumps({"der": der.hex(), "whoami": whoami}))
    """)


def served_slapd_certificate():
    """The certificate slapd on svc presents to a client host that checks it against its bundle (by name)."""
    ldap = ldap_settings()
    server = ldap["uri"].split("://", 1)[1].split(":")[0].split("/")[0]  # svc, as clients name it
    checked = sh("python3", "-c", LDAPS_CHECK, server, TLS_DIR + "/ca.pem", ldap["bind_dn"],
                 input=secrets()["daskhpc_ldap_reader_password"], host="login", check=False)
    assert checked.returncode == 0, checked.stderr[-3000:]
    result = json.loads(checked.stdout)
    assert result["whoami"]
    return x509.load_der_x509_certificate(bytes.fromhex(result["der"]))


def test_slapd_serves_ldaps_with_the_issued_certificate():
    """slapd on svc uses /etc/daskhpc/tls/slapd.pem."""
    assert served_slapd_certificate().serial_number == serial(LDAP_HOST, TLS_DIR + "/slapd.pem")


def test_a_reissued_slapd_certificate_is_served_at_once():
    """slapd reads its certificate only at start: pki_client restarts it when it installs a new one.

    The CA's copy of slapd's certificate is removed, as a renewal replaces it, so the next run issues a new one.
    """
    before = served_slapd_certificate().serial_number
    sh("rm", "-f", "%s/issued/%s/slapd.pem" % (CA_DIR, LDAP_HOST), host=CA_HOST)
    playbook("pki.yml", "--limit", LDAP_HOST)
    installed = serial(LDAP_HOST, TLS_DIR + "/slapd.pem")
    assert installed != before
    assert served_slapd_certificate().serial_number == installed
    # The issuance is a new ledger line. The same run, limited to svc, gave the exporter on ctl its copy
    # (its certificate metrics) by delegation: no metrics play needed, and the site stays converged.
    controller = inventory_group("slurm_controller")[0]  # ctl, where the exporter runs
    assert read_file(controller, "/var/lib/daskhpc/ca-ledger.jsonl") == read_file(CA_HOST, CA_DIR + "/ledger.jsonl")
