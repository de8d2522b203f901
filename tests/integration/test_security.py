"""Attacks on the lab by its ordinary users, each of which must fail (issue: security on a shared site).

Every test acts as an unprivileged account (alice, bob, mallory on the login host, or `nobody` on the
directory host) against the real daemons, and each has a control showing the probe itself works: the
owner or the right service gets through where the attacker does not.

More attacks live beside the feature they attack: user credentials and symlinks (test_pki_playbooks),
identity-bound Dask TLS (test_pki_tls), discovery spoofing (test_metrics and tests/unit/test_discovery_serve).
"""

from __future__ import annotations

import textwrap

import pytest
import yaml
from burst_helpers import PREAMBLE
from conftest import LAB_INVENTORY, sh
from ldap_helpers import ldap_settings, secrets

pytestmark = pytest.mark.lab

with open(LAB_INVENTORY / "group_vars" / "all" / "site.yml") as _fh:
    _SITE = yaml.safe_load(_fh)["daskhpc_site"]
LOGIN = "login"
# ldapsearch's trust for StartTLS/LDAPS: the site bundle (there is no /etc/ldap/ldap.conf on the hosts).
LDAP_TLS = {"LDAPTLS_CACERT": "/etc/daskhpc/tls/ca.pem"}
DIRECTORY = "svc"
CONTROLLER = "ctl"


# --- the directory ------------------------------------------------------------------------------------


def test_local_accounts_on_the_directory_host_read_nothing_through_ldapi(lab):
    """slapd maps any local account to a peercred DN on ldapi:///; only root's may read."""
    base = ldap_settings()["base_dn"]
    search = ["ldapsearch", "-LLL", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///", "-b", base, "(uid=alice)", "dn"]
    as_root = sh(*search, host=DIRECTORY)
    assert "dn: uid=alice," in as_root.stdout
    as_nobody = sh("runuser", "-u", "nobody", "--", *search, host=DIRECTORY, check=False)
    assert "uid=alice" not in as_nobody.stdout, as_nobody.stdout


def test_a_user_cannot_read_any_password_hash_not_even_her_own(lab):
    ldap = ldap_settings()
    password = secrets()["daskhpc_lab_user_passwords"]["alice"]
    dn = "uid=alice," + ldap["user_base"]
    for target in (dn, "uid=bob," + ldap["user_base"]):
        answer = sh("ldapsearch", "-LLL", "-x", "-ZZ", "-H", ldap["uri"], "-D", dn, "-y", "/dev/stdin",
                    "-b", target, "-s", "base", "uid", "userPassword", user="alice", host=LOGIN, input=password,
                    env=LDAP_TLS, check=False)
        assert answer.returncode in (0, 32) and "userPassword" not in answer.stdout, answer.stdout + answer.stderr
    own = sh("ldapsearch", "-LLL", "-x", "-ZZ", "-H", ldap["uri"], "-D", dn, "-y", "/dev/stdin", "-b", dn,
             "-s", "base", "uid", user="alice", host=LOGIN, input=password, env=LDAP_TLS)
    assert "uid: alice" in own.stdout  # she binds and reads her own entry: the probe works


def test_a_user_bound_as_herself_cannot_list_the_directory(lab):
    ldap = ldap_settings()
    dn = "uid=mallory," + ldap["user_base"]
    answer = sh("ldapsearch", "-LLL", "-x", "-ZZ", "-H", ldap["uri"], "-D", dn, "-y", "/dev/stdin",
                "-b", ldap["base_dn"], "(objectClass=posixAccount)", "uid", user="mallory", host=LOGIN,
                input=secrets()["daskhpc_lab_user_passwords"]["mallory"], env=LDAP_TLS, check=False)
    assert answer.returncode in (0, 32), answer.stdout + answer.stderr  # bound and searched: the probe works
    found = {line.split(": ")[1] for line in answer.stdout.splitlines() if line.startswith("uid: ")}
    assert found <= {"mallory"}, answer.stdout


@pytest.mark.parametrize("port", [636])
def test_the_directory_refuses_tls_older_than_1_2(lab, port):
    def handshake(version):
        return sh("sh", "-c", "echo | timeout 10 openssl s_client -%s -cipher 'DEFAULT:@SECLEVEL=0' -connect %s:%d"
                  % (version, DIRECTORY, port), user="mallory", host=LOGIN, check=False).stdout

    for old in ("tls1", "tls1_1"):
        assert "Cipher is (NONE)" in handshake(old), old
    assert "Cipher is (NONE)" not in handshake("tls1_2")


# --- another user's Dask cluster ----------------------------------------------------------------------

CLUSTER_SCRIPT = PREAMBLE + textwrap.dedent("""\
    import urllib.parse
    from daskhpc import BurstCluster

    with BurstCluster(progress=False) as cluster:
        link = urllib.parse.urlsplit(cluster.dashboard_link)
        event("started", {"dashboard_port": link.port, "query": link.query,
                          "metrics_port": cluster.scheduler_info["services"]["metrics"],
                          "address": cluster.scheduler_address})
        wait_for("close", 600)
    event("closed")
    """)

CURL = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"]


def user_tls(user):
    home = "/home/%s/.daskhpc/tls" % user
    return ["--cacert", "/etc/daskhpc/tls/ca.pem", "--cert", home + "/user.pem", "--key", home + "/user.key",
            "--insecure"]  # the scheduler's certificate is its owner's, which names no host


@pytest.fixture(scope="module")
def alices_cluster(lab, request):
    from conftest import UserScript

    script = UserScript("alice")
    proc = script.start(CLUSTER_SCRIPT)
    try:
        started = script.event("started", 180)
    except Exception:
        script.mark("close")
        pytest.fail("alice's cluster did not start:\n%s" % proc.finish(60).stderr[-3000:])
    host = started["address"].split("//")[1].rsplit(":", 1)[0]
    yield dict(started, host=host)
    script.mark("close")
    proc.finish(120)
    script.close()


def test_another_user_on_the_login_host_gets_no_dashboard(alices_cluster):
    url = "http://127.0.0.1:%d/status" % alices_cluster["dashboard_port"]
    for path in ("/status", "/json/identity.json", "/metrics", "/info/main/workers.html"):
        assert sh(*CURL, url.replace("/status", path), user="bob", host=LOGIN).stdout == "403", path
    # the owner's link (with its token) opens it
    assert sh(*CURL, url + "?" + alices_cluster["query"], user="alice", host=LOGIN).stdout == "302"


def test_another_user_or_the_network_gets_no_scheduler_metrics(alices_cluster):
    url = "https://%s:%d/metrics" % (alices_cluster["host"], alices_cluster["metrics_port"])
    plain = "http://%s:%d/metrics" % (alices_cluster["host"], alices_cluster["metrics_port"])
    assert sh(*CURL, *user_tls("bob"), url, user="bob", host=LOGIN, check=False).stdout != "200"
    assert sh(*CURL, "--insecure", url, user="mallory", host=LOGIN, check=False).stdout != "200"
    assert sh(*CURL, plain, user="mallory", host=CONTROLLER, check=False).stdout != "200"
    assert sh(*CURL, *user_tls("alice"), url, user="alice", host=LOGIN).stdout == "200"


def test_the_dashboard_is_not_on_the_network(alices_cluster):
    url = "http://%s:%d/status" % (alices_cluster["host"], alices_cluster["dashboard_port"])
    answer = sh(*CURL, url, host=CONTROLLER, check=False)
    assert answer.stdout in ("000", ""), answer.stdout  # nothing listens there


# --- the batch system ---------------------------------------------------------------------------------


def test_users_see_only_their_own_jobs(lab):
    job = sh("sbatch", "--parsable", "--hold", "-p", "prod", "-J", "alices-secret-name", "-o", "/dev/null",
             "--wrap", "true", user="alice", host=LOGIN).stdout.strip()
    try:
        for user in ("bob", "mallory"):
            listing = sh("squeue", "--all", "-h", "-o", "%i %j %u", user=user, host=LOGIN, check=False).stdout
            assert job not in listing and "alices-secret-name" not in listing, (user, listing)
            shown = sh("scontrol", "show", "job", job, user=user, host=LOGIN, check=False)
            assert "alices-secret-name" not in shown.stdout, (user, shown.stdout)
        assert "alices-secret-name" in sh("squeue", "-h", "-o", "%j", "-j", job, user="alice", host=LOGIN).stdout
    finally:
        sh("scancel", job, host=CONTROLLER, check=False)


# --- the exporter and Prometheus ----------------------------------------------------------------------


def test_users_cannot_read_the_exporter_or_prometheus(lab):
    metrics = _SITE["metrics"]
    exporter = "https://%s:%d/metrics" % (CONTROLLER, metrics["exporter_port"])
    prometheus = "https://%s:%d/api/v1/query?query=up" % (DIRECTORY, metrics["prometheus_port"])
    bob = user_tls("bob")[:-1]  # these services present host-named certificates: verify them
    assert sh(*CURL, *bob, exporter, user="bob", host=LOGIN, check=False).stdout != "200"
    assert sh(*CURL, "http://%s:%d/metrics" % (CONTROLLER, metrics["exporter_port"]), user="bob", host=LOGIN,
              check=False).stdout != "200"
    assert sh(*CURL, *bob, prometheus, user="bob", host=LOGIN, check=False).stdout == "401"
    assert sh(*CURL, "-K", "-", *bob, prometheus, user="bob", host=LOGIN, input='user = "daskhpc-admin:guess"\n',
              check=False).stdout == "401"
    # controls: Prometheus's own certificate reads the exporter; the operator's password reads Prometheus
    as_prometheus = ["--cacert", "/etc/daskhpc/tls/ca.pem", "--cert", "/etc/daskhpc/tls/prometheus.pem",
                     "--key", "/etc/daskhpc/tls/prometheus.key"]
    assert sh(*CURL, *as_prometheus, exporter, host=DIRECTORY).stdout == "200"
    password = secrets()["daskhpc_prometheus_password"]
    assert sh(*CURL, "--cacert", "/etc/daskhpc/tls/ca.pem", "-K", "-", prometheus, host=DIRECTORY,
              input='user = "daskhpc-admin:%s"\n' % password).stdout == "200"  # not in argv


# --- what listens where -------------------------------------------------------------------------------

# Daemons that listen on every interface by design: sshd, and SLURM's daemons (slurmctld 6817, slurmd
# 6818, slurmdbd 6819; authenticated with MUNGE). Everything else listens on its host's own address
# or on loopback, as its role chose.
WILDCARD_OK = {22, 6817, 6818, 6819}


@pytest.mark.parametrize("host", ["ctl", "login", "svc", "cn1"])
def test_nothing_else_listens_on_every_interface(lab, host):
    listening = sh("ss", "-Hltn", host=host).stdout.split("\n")
    wildcard = set()
    for line in filter(None, listening):
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        if address in ("0.0.0.0", "*", "[::]"):
            wildcard.add(int(port))
    assert wildcard <= WILDCARD_OK, "%s listens on every interface on ports %s" % (host, sorted(wildcard - WILDCARD_OK))
