"""`daskhpc discovery-serve` under attack: real files with real owners, real listening sockets of
other uids, a real HTTPS server with certificates from the project's own CA code.

The tests run as root and play other users with system accounts: `daemon` is alice (a data
scientist), `bin` is mallory (another user), `sys` is the discovery service's account.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki
from daskhpc import discovery, discovery_serve
from daskhpc.discovery_serve import Discovery, DiscoveryServer, TLSFiles

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays other users: needs root")

ALICE, MALLORY, SERVICE = (pwd.getpwnam(name) for name in ("daemon", "bin", "sys"))
PASS = "correct horse battery staple"
OLD = time.time() - 3600  # older than the grace period


def host_ip():
    """An IPv4 address of this host that is not loopback (a target Prometheus could reach)."""
    addresses = sorted(str(ip) for ip in discovery_serve.local_addresses() if ip.version == 4)
    if not addresses:
        pytest.skip("this host has no non-loopback IPv4 address")
    return addresses[0]


def host_ip6():
    addresses = sorted(str(ip) for ip in discovery_serve.local_addresses() if ip.version == 6)
    if not addresses or not socket.has_ipv6:
        pytest.skip("this host has no global IPv6 address")
    return addresses[0]


# --- playing other users ----------------------------------------------------------------------


def _become(account):
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)


@contextlib.contextmanager
def listening_as(account, host, port=0, *, family=socket.AF_INET, freebind=False, v6only=False):
    """A TCP socket in LISTEN state owned by `account`, held by a forked child; yields its port."""
    port_r, port_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, listen, wait for the parent to let go
        code = 1
        try:
            os.close(port_r)
            os.close(stop_w)
            _become(account)
            sock = socket.socket(family, socket.SOCK_STREAM)
            if freebind:  # bind an address this host does not have (unprivileged on Linux)
                sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
            if v6only:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(1)
            os.write(port_w, b"%d" % sock.getsockname()[1])
            os.read(stop_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(port_w)
    os.close(stop_r)
    try:
        data = os.read(port_r, 16)
        assert data, "%s could not listen on %s:%d" % (account.pw_name, host, port)
        yield int(data)
    finally:
        os.close(stop_w)
        os.close(port_r)
        os.waitpid(pid, 0)


def run_as(account, function):
    """function() in a forked child running as `account`; returns its JSON-able result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            _become(account)
            os.write(write_end, json.dumps(function()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def in_time(function, seconds=10):
    """function()'s result, failing the test if it blocks (a FIFO would block a plain open)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked for %d s" % seconds
    return result[0]


# --- the targets directory ----------------------------------------------------------------------


@pytest.fixture
def targets():
    """A sticky world-writable directory like the role makes it: owned by the service's account.
    Its parent is traversable, so forked children running as other users reach it."""
    parent = tempfile.mkdtemp(prefix="daskhpc-disc-")
    os.chmod(parent, 0o755)
    directory = os.path.join(parent, "dask-targets")
    os.mkdir(directory)
    os.chown(directory, SERVICE.pw_uid, 0)
    os.chmod(directory, 0o1777)
    yield directory
    shutil.rmtree(parent)


def write(directory, name, owner, content, mtime=None):
    """A file as `owner` wrote it (created by root, then chowned)."""
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content if isinstance(content, str) else json.dumps(content))
    os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chmod(path, 0o644)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def entry(target, cluster_id="Scheduler-1", **labels):
    return [{"targets": [target], "labels": dict(labels, cluster_id=cluster_id)}]


def served(directory, **options):
    return in_time(lambda: Discovery(directory, site="lab", **options).targets())


# --- labels come from the file's owner ----------------------------------------------------------


def test_labels_come_from_the_owner_not_from_the_file(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        # alice's own file claims to be mallory's, and tries to steer Prometheus's relabelling
        write(targets, "a.json", ALICE, entry("%s:%d" % (ip, port), user=MALLORY.pw_name, job="node",
                                              site="elsewhere", __address__="192.0.2.250:22",
                                              __metrics_path__="/admin", __scheme__="https",
                                              __meta_daskhpc_user=MALLORY.pw_name))
        groups = served(targets)
    assert groups == [{"targets": ["%s:%d" % (ip, port)],
                       "labels": {"user": ALICE.pw_name, "cluster_id": "Scheduler-1", "site": "lab"}}]


def test_a_file_about_another_users_scheduler_is_not_served(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        write(targets, "alice.json", ALICE, entry("%s:%d" % (ip, port), cluster_id="alice-cluster"))
        # mallory publishes alice's scheduler as hers
        write(targets, "mallory.json", MALLORY, entry("%s:%d" % (ip, port), cluster_id="mallory-cluster"))
        groups = served(targets)
    assert [(g["labels"]["user"], g["labels"]["cluster_id"]) for g in groups] == [(ALICE.pw_name, "alice-cluster")]


def test_cluster_id_must_be_a_plain_name(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        write(targets, "a.json", ALICE, entry("%s:%d" % (ip, port), cluster_id="x\"}\n" + "y" * 300))
        assert served(targets)[0]["labels"]["cluster_id"] == ""


# --- a target must be this host and the owner's own listening socket ----------------------------


def test_a_target_on_another_host_is_not_served(targets):
    # mallory's socket on an address this host does not have (IP_FREEBIND needs no privilege),
    # so a port check alone would point Prometheus at another machine
    with listening_as(MALLORY, "192.0.2.251", freebind=True) as port:
        write(targets, "m.json", MALLORY, entry("192.0.2.251:%d" % port))
        assert served(targets) == []
    assert os.path.exists(os.path.join(targets, "m.json"))  # not a dead scheduler: left alone


def test_loopback_and_names_are_not_targets(targets):
    with listening_as(MALLORY, "127.0.0.1") as port:
        write(targets, "lo.json", MALLORY, entry("127.0.0.1:%d" % port))
        write(targets, "name.json", MALLORY, entry("localhost:%d" % port))
        write(targets, "v6.json", MALLORY, entry("::1:%d" % port))
        assert served(targets) == []


def test_a_port_nobody_of_that_uid_listens_on_is_not_served(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as alice_port:
        # the Prometheus host's node exporter, sshd, alice's port: none is mallory's socket
        for n, port in enumerate((22, 9100, alice_port)):
            write(targets, "m%d.json" % n, MALLORY, entry("%s:%d" % (ip, port)))
        assert served(targets) == []


def test_an_ipv6_wildcard_socket_does_not_vouch_for_an_ipv4_target(targets):
    """alice listens on 0.0.0.0:P; mallory may still listen on [::]:P (v6 only), then claim ip:P."""
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port, \
            listening_as(MALLORY, "::", port, family=socket.AF_INET6, v6only=True):
        write(targets, "m.json", MALLORY, entry("%s:%d" % (ip, port)))
        assert served(targets) == []


def test_ipv6_targets_are_checked_against_tcp6(targets):
    ip6 = host_ip6()
    with listening_as(ALICE, "::", family=socket.AF_INET6, v6only=True) as port:
        write(targets, "a.json", ALICE, entry("[%s]:%d" % (ip6, port)))
        assert served(targets)[0]["targets"] == ["[%s]:%d" % (ip6, port)]


def test_a_socket_bound_to_one_address_vouches_for_that_address_only(targets):
    ip = host_ip()
    with listening_as(ALICE, "127.0.0.1") as port:
        write(targets, "a.json", ALICE, entry("%s:%d" % (ip, port)))
        assert served(targets) == []


def test_proc_net_tcp_names_the_socket_owner():
    ip = host_ip()
    with listening_as(ALICE, ip) as port, listening_as(MALLORY, "0.0.0.0") as port2:
        found = discovery_serve.listening_sockets()
    assert (ipaddress.ip_address(ip), port, ALICE.pw_uid) in found
    assert (ipaddress.ip_address("0.0.0.0"), port2, MALLORY.pw_uid) in found
    assert (ipaddress.ip_address(ip), port, MALLORY.pw_uid) not in found


# --- files that are not what they seem -----------------------------------------------------------


def test_fifos_symlinks_and_directories_are_skipped_without_blocking(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        alice = write(targets, "alice.json", ALICE, entry("%s:%d" % (ip, port)))
        fifo = os.path.join(targets, "fifo.json")
        os.mkfifo(fifo)
        os.chown(fifo, MALLORY.pw_uid, MALLORY.pw_gid)
        link = os.path.join(targets, "link.json")  # mallory's name for alice's file
        os.symlink(alice, link)
        os.lchown(link, MALLORY.pw_uid, MALLORY.pw_gid)
        os.symlink("/etc/daskhpc/tls/dask-discovery.key", os.path.join(targets, "key.json"))
        os.mkdir(os.path.join(targets, "dir.json"))
        with socket.socket(socket.AF_UNIX) as unix:
            unix.bind(os.path.join(targets, "sock.json"))
            groups = served(targets)
    assert [g["labels"]["user"] for g in groups] == [ALICE.pw_name]


def test_a_file_swapped_for_a_fifo_after_listing_does_not_block(targets):
    path = os.path.join(targets, "swap.json")
    os.mkfifo(path)
    assert in_time(lambda: discovery_serve.read_regular(path, 4096)) is None


def test_files_over_the_size_bound_are_skipped(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        write(targets, "big.json", ALICE, json.dumps(entry("%s:%d" % (ip, port))) + " " * 5000)
        assert served(targets) == []
        assert len(served(targets, max_bytes=8192)) == 1


def test_entries_per_user_are_bounded_and_others_still_served(targets):
    ip = host_ip()
    with contextlib.ExitStack() as stack:
        ports = [stack.enter_context(listening_as(MALLORY, "0.0.0.0")) for _index in range(5)]
        for n, port in enumerate(ports):
            write(targets, "m%d.json" % n, MALLORY, entry("%s:%d" % (ip, port)))
        alice_port = stack.enter_context(listening_as(ALICE, "0.0.0.0"))
        write(targets, "a.json", ALICE, entry("%s:%d" % (ip, alice_port)), mtime=OLD)
        groups = served(targets, max_per_user=3)
    users = [g["labels"]["user"] for g in groups]
    assert users.count(MALLORY.pw_name) == 3 and users.count(ALICE.pw_name) == 1


def test_the_same_target_twice_is_served_once(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        write(targets, "a1.json", ALICE, entry("%s:%d" % (ip, port)))
        write(targets, "a2.json", ALICE, entry("%s:%d" % (ip, port)))
        assert len(served(targets)) == 1


def test_junk_is_skipped_and_others_still_served(targets):
    ip = host_ip()
    for n, content in enumerate(["{not json", "[]", "{}", '[{"targets": "x"}]', '[{"targets": [1]}]',
                                 '[{"targets": ["a:1", "b:2"]}]', "null", "\xff\xfe", "[" * 2000 + "]" * 2000]):
        write(targets, "j%d.json" % n, MALLORY, content)
    with listening_as(ALICE, "0.0.0.0") as port:
        write(targets, "a.json", ALICE, entry("%s:%d" % (ip, port)), mtime=OLD)
        assert [g["labels"]["user"] for g in served(targets)] == [ALICE.pw_name]


# --- dead schedulers ----------------------------------------------------------------------------------


def test_the_service_removes_entries_of_dead_schedulers(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as gone:
        pass
    dead = write(targets, "dead.json", ALICE, entry("%s:%d" % (ip, gone)), mtime=OLD)
    young = write(targets, "young.json", ALICE, entry("%s:%d" % (ip, gone)))  # just registered: grace period
    with listening_as(ALICE, "0.0.0.0") as port:
        live = write(targets, "live.json", ALICE, entry("%s:%d" % (ip, port)), mtime=OLD)
        # as the service's account: it owns the sticky directory, so it may remove alice's file
        groups = run_as(SERVICE, lambda: Discovery(targets).targets())
    assert [g["targets"] for g in groups] == [["%s:%d" % (ip, port)]]
    assert not os.path.exists(dead) and os.path.exists(young) and os.path.exists(live)


def test_nobody_else_can_remove_entries(targets):
    """The removal right comes from owning the directory: another account's attempt fails and is logged."""
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        pass
    dead = write(targets, "dead.json", ALICE, entry("%s:%d" % (ip, port)), mtime=OLD)
    assert run_as(MALLORY, lambda: Discovery(targets).targets()) == []
    assert os.path.exists(dead)


# --- register (the users' side) ------------------------------------------------------------------------


class FakeCluster:
    def __init__(self, host, port, cluster_id="Scheduler-abc"):
        self.scheduler_info = {"address": "tls://%s:40001" % host, "id": cluster_id,
                               "services": {"metrics": port}}


def test_register_is_served_and_does_not_block_on_planted_fifos(targets):
    ip = host_ip()
    for name in ("fifo.json", ".tmp-fifo.json"):
        os.mkfifo(os.path.join(targets, name))
        os.chown(os.path.join(targets, name), MALLORY.pw_uid, MALLORY.pw_gid)
    with listening_as(ALICE, "0.0.0.0") as port:
        path = run_as(ALICE, lambda: discovery.register(FakeCluster(ip, port), directory=targets))
        groups = served(targets)
    assert os.stat(path).st_uid == ALICE.pw_uid and os.stat(path).st_mode & 0o777 == 0o644
    assert groups == [{"targets": ["%s:%d" % (ip, port)],
                       "labels": {"user": ALICE.pw_name, "cluster_id": "Scheduler-abc", "site": "lab"}}]


# --- HTTPS with mutual TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    """A site CA and the certificates the attacks need, made with the project's own CA code."""
    base = tmp_path_factory.mktemp("pki")
    ca_dir = str(base / "ca")
    pki.ensure_ca(ca_dir, "unit CA", PASS)
    other_ca = str(base / "other-ca")
    pki.ensure_ca(other_ca, "unit CA", PASS)

    def issue(ca, name, cn, profile, sans=()):
        req = {"path": str(base / (name + ".pem")), "subject": {"CN": cn}, "subject_alt_names": list(sans),
               "profile": profile}
        results, _records = pki.ensure_certificates(ca, PASS, [req], defaults={"days": 90, "renew_before_days": 30})
        return results[0]["after"]["serial"]

    issue(ca_dir, "server", "login.test", "service", ["login.test", "IP:127.0.0.1"])
    issue(ca_dir, "prometheus", "prom.test", "service", ["prom.test", "IP:192.0.2.20"])
    serials = {"revoked": issue(ca_dir, "revoked", "prom.test", "service", ["prom.test"])}
    issue(ca_dir, "prom-host", "prom.test", "host", ["prom.test"])  # the Prometheus host's host certificate
    issue(ca_dir, "user", "prom.test", "user")  # a user who picked Prometheus's host name as login
    issue(ca_dir, "other-service", "login.test", "service", ["login.test"])
    issue(other_ca, "foreign", "prom.test", "service", ["prom.test"])
    shutil.copy(os.path.join(ca_dir, "ca.pem"), base / "ca.pem")
    return {"dir": base, "ca_dir": ca_dir, "serials": serials}


@pytest.fixture
def server(pki_dir, targets):
    base = pki_dir["dir"]
    tls = TLSFiles(str(base / "server.pem"), str(base / "server.key"), str(base / "ca.pem"), str(base / "crl.pem"))
    srv = DiscoveryServer(("127.0.0.1", 0), tls, ["prom.test"], Discovery(targets, site="lab"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(server, pki_dir, client=None, path="/targets"):
    """(status, body) as a client with certificate `client` (a name in pki_dir) or none."""
    base = pki_dir["dir"]
    ctx = ssl.create_default_context(cafile=str(base / "ca.pem"))
    if client:
        ctx.load_cert_chain(str(base / (client + ".pem")), str(base / (client + ".key")))
    conn = http.client.HTTPSConnection("127.0.0.1", server.server_address[1], context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


def test_prometheus_gets_the_targets(server, pki_dir, targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        write(targets, "a.json", ALICE, entry("%s:%d" % (ip, port)))
        status, body = get(server, pki_dir, "prometheus")
    assert status == 200
    assert json.loads(body) == [{"targets": ["%s:%d" % (ip, port)],
                                 "labels": {"user": ALICE.pw_name, "cluster_id": "Scheduler-1", "site": "lab"}}]
    assert get(server, pki_dir, "prometheus", path="/other")[0] == 404


def test_no_client_certificate_no_answer(server, pki_dir):
    with pytest.raises(REFUSED):
        get(server, pki_dir)


def test_a_certificate_from_another_ca_is_refused(server, pki_dir):
    with pytest.raises(REFUSED):
        get(server, pki_dir, "foreign")


@pytest.mark.parametrize("client", ["user", "prom-host", "other-service"])
def test_site_certificates_that_are_not_prometheus_service_certificate_are_refused(server, pki_dir, client):
    """Refused right after the handshake: the connection closes without an HTTP answer."""
    with pytest.raises(REFUSED):
        get(server, pki_dir, client)


def test_a_revoked_prometheus_certificate_is_refused_once_the_crl_says_so(server, pki_dir):
    assert get(server, pki_dir, "revoked")[0] == 200
    pki.ensure_crl(pki_dir["ca_dir"], PASS, revoke=[{"serial": pki_dir["serials"]["revoked"]}])
    crl = pki_dir["dir"] / "crl.pem"
    shutil.copy(os.path.join(pki_dir["ca_dir"], "crl.pem"), crl)
    try:
        # the running server notices the new CRL (no restart)
        with pytest.raises(REFUSED):
            get(server, pki_dir, "revoked")
        assert get(server, pki_dir, "prometheus")[0] == 200
    finally:
        os.remove(crl)


def test_a_silent_peer_does_not_hold_up_prometheus(server, pki_dir):
    with socket.create_connection(server.server_address):  # connects, never says hello
        started = time.monotonic()
        assert get(server, pki_dir, "prometheus")[0] == 200
        assert time.monotonic() - started < 5


def test_once_prints_the_answer(targets):
    ip = host_ip()
    with listening_as(ALICE, "0.0.0.0") as port:
        write(targets, "a.json", ALICE, entry("%s:%d" % (ip, port)))
        proc = subprocess.run([sys.executable, "-m", "daskhpc.cli", "discovery-serve", "--dir", targets, "--once"],
                              capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(proc.stdout)[0]["labels"]["user"] == ALICE.pw_name


# --- daskhpc doctor on a login host ----------------------------------------------------------------


def doctor_check(pki_dir, targets, port):
    from daskhpc.doctor import Doctor

    config = {"metrics-targets-dir": targets, "metrics-discovery-port": port, "contact": "hpc-help",
              "tls": {"ca": str(pki_dir["dir"] / "ca.pem")}}
    return Doctor(config=config, user="alice").check_metrics_dir()


def test_doctor_passes_when_the_service_answers_and_refuses_us(server, pki_dir, targets):
    check = doctor_check(pki_dir, targets, server.server_address[1])
    assert check.ok and "only to Prometheus" in check.detail


def test_doctor_fails_when_nothing_answers(pki_dir, targets):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening
        check = doctor_check(pki_dir, targets, port)
    assert not check.ok and "nothing answers" in check.detail and "systemctl status daskhpc-discovery" in check.fix


def test_doctor_fails_when_the_service_answers_anyone(pki_dir, targets):
    base = pki_dir["dir"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(base / "server.pem"), str(base / "server.key"))  # no client certificate required
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer():
            conn, _address = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
                tls.sendall(b"HTTP/1.0 200 OK\r\n\r\n[]")
        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        check = doctor_check(pki_dir, targets, listener.getsockname()[1])
        thread.join(10)
    assert not check.ok and "without Prometheus's certificate" in check.detail


def test_doctor_fails_without_the_directory(pki_dir, targets):
    check = doctor_check(pki_dir, targets + "-missing", 9)
    assert not check.ok and "dask_discovery" in check.fix


def test_the_command_serves_with_its_options(pki_dir, targets):
    base = pki_dir["dir"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "daskhpc.cli", "discovery-serve", "--dir", targets,
                             "--listen", "127.0.0.1", "--port", str(port), "--cert", str(base / "server.pem"),
                             "--key", str(base / "server.key"), "--ca", str(base / "ca.pem"),
                             "--crl", str(base / "no-crl.pem"), "--allow", "prom.test", "--site", "lab"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the service did not start"
                time.sleep(0.2)

        class Bound:
            server_address = ("127.0.0.1", port)

        assert get(Bound, pki_dir, "prometheus") == (200, b"[]")
        with pytest.raises(REFUSED):
            get(Bound, pki_dir, "other-service")
    finally:
        proc.terminate()
        proc.wait(10)
