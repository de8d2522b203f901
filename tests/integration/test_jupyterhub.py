"""Notebooks through the site's identity, in a real headless Chromium (issue 14, item 6).

alice logs in to JupyterHub on the login host with her directory password, runs a notebook cell that starts
a BurstCluster and computes on the burst partition, and opens the Dask dashboard through her server's
jupyter-server-proxy. bob, logged in too, cannot reach her server or her dashboard (not through the hub,
not on the login host's loopback); mallory, outside the burst groups, cannot log in. The hub's TLS chain is
checked against the site CA with Python's ssl, and Chromium trusts the site CA only (an NSS database of its
own), so a certificate that does not chain to it fails the browser too.

The browser is Debian's chromium driven through chromium-driver (selenium); the test installs them with
apt when they are missing. Nothing here is installed on the lab's hosts.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from conftest import LAB_INVENTORY, address, read_file, remote_command, sh, ssh_argv, write_file

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

HOST = "login"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NOTEBOOK = "jupyterhub-test.ipynb"
SECRETS = LAB_INVENTORY / "group_vars" / "all" / "lab_secrets.yml"

CELL = r'''
import dask.array as da
from daskhpc import BurstCluster
cluster = BurstCluster()
client = cluster.get_client()
display(cluster)
total = int(da.arange(1_000_000, chunks=100_000).sum().compute())
print("SUM=%d" % total)
print("PROGRESS=" + cluster.status_text())
print("DASHBOARD=" + cluster.dashboard_link)
'''
CLOSE_CELL = 'client.close(); cluster.close(); print("CLOSED")'


def password(user):
    with open(SECRETS) as fh:
        return yaml.safe_load(fh)["daskhpc_lab_user_passwords"][user]


def apt_install(*packages):
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, timeout=600)
    proc = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], capture_output=True, text=True,
                          timeout=1200, check=False, env={"DEBIAN_FRONTEND": "noninteractive",
                                                          "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, "apt-get install %s failed:\n%s" % (" ".join(packages), proc.stderr[-3000:])


@pytest.fixture(scope="module")
def hub(lab, lab_site, tmp_path_factory):
    """The hub's URL and the site bundle (read from the login host, as pki_client installed it)."""
    if not (lab_site.get("jupyterhub") or {}).get("enabled"):
        pytest.fail("the lab's site model does not enable jupyterhub (inventories/lab site.yml)")
    port = lab_site["jupyterhub"].get("port", 8443)
    ca = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.write_bytes(read_file(HOST, "/etc/daskhpc/tls/ca.pem"))
    return {"url": "https://%s:%d" % (HOST, port), "port": port, "ca": ca}


@pytest.fixture(scope="module")
def browser_home(hub, tmp_path_factory):
    """A HOME whose NSS database trusts the site CA and nothing else added: Chromium's view of the site."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        apt_install("chromium", "chromium-driver")
    if not shutil.which("certutil"):
        apt_install("libnss3-tools")
    home = tmp_path_factory.mktemp("browser-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", "sql:%s" % nssdb, "-N", "--empty-password"], check=True, capture_output=True)
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", hub["ca"].read_text(), re.S)
    assert pems, "no certificate in the site bundle"
    for i, pem in enumerate(pems):
        path = home / ("site-%d.pem" % i)
        path.write_text(pem + "\n")
        subprocess.run(["certutil", "-d", "sql:%s" % nssdb, "-A", "-t", "C,,", "-n", "daskhpc-site-%d" % i,
                        "-i", str(path)], check=True, capture_output=True)
    return home


class Browser:
    """One headless Chromium session (its own profile: its own cookies)."""

    def __init__(self, home, hub):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.hub = hub
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = home / ("profile-%d" % time.monotonic_ns())
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                    "--user-data-dir=%s" % profile, "--host-resolver-rules=MAP %s %s" % (HOST, address(HOST))):
            options.add_argument(arg)
        service = Service(executable_path=CHROMEDRIVER, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(120)

    def get(self, path_or_url):
        self.driver.get(urllib.parse.urljoin(self.hub["url"], path_or_url))
        return self.driver.page_source

    def wait(self, condition, timeout, what):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            # JupyterLab re-renders cells and outputs while it works: an element read a moment ago may be gone.
            return WebDriverWait(self.driver, timeout, poll_frequency=1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(condition)
        except Exception as exc:
            raise AssertionError("%s: not within %d s (at %s):\n%s" % (what, timeout, self.driver.current_url,
                                                                       self.text()[-3000:])) from exc

    def text(self):
        try:
            return self.driver.find_element("tag name", "body").text
        except Exception:
            return self.driver.page_source

    def login(self, user):
        from selenium.webdriver.common.by import By

        self.get("/hub/login")
        self.driver.find_element(By.ID, "username_input").send_keys(user)
        self.driver.find_element(By.ID, "password_input").send_keys(password(user))
        self.driver.find_element(By.ID, "login_submit").click()

    def quit(self):
        self.driver.quit()


def single_user_pids(user):
    proc = sh("pgrep", "-u", user, "-f", "jupyterhub-singleuser", host=HOST, check=False)
    return [pid for pid in proc.stdout.split() if pid.isdigit()]


def stop_servers(*users):
    for user in users:
        for pid in single_user_pids(user):
            sh("kill", pid, host=HOST, check=False)
    sh("scancel", "--user=alice", check=False)


@pytest.fixture(scope="module")
def alice(hub, browser_home):
    stop_servers("alice", "bob")
    notebook = {"nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                            "language": "python"}},
                "cells": [{"cell_type": "code", "id": "burst", "metadata": {}, "execution_count": None,
                           "outputs": [], "source": CELL.strip()},
                          {"cell_type": "code", "id": "close", "metadata": {}, "execution_count": None,
                           "outputs": [], "source": CLOSE_CELL}]}
    write_file(NOTEBOOK, json.dumps(notebook), user="alice")
    browser = Browser(browser_home, hub)
    try:
        yield browser
    finally:
        browser.quit()
        stop_servers("alice", "bob")


def run_cell(browser, index, marker, timeout):
    """Open the notebook, wait for its kernel, run cell `index` (Shift+Enter) and wait for `marker` in an output."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get("/user/alice/lab/tree/%s" % NOTEBOOK)
    browser.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")) > index, 180,
                 "the notebook's cells")
    browser.wait(lambda d: any(re.search(r"\|\s*Idle", e.text) for e in
                               d.find_elements(By.CSS_SELECTOR, ".jp-StatusBar-Widget, .jp-StatusBar-TextItem")),
                 180, "the kernel (Idle in the status bar)")
    for _attempt in range(10):  # JupyterLab re-renders the notebook once its kernel connects
        try:
            editor = browser.driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")[index]
            editor.click()
            editor.send_keys(Keys.SHIFT, Keys.ENTER)
            break
        except Exception:
            time.sleep(2)
    else:
        raise AssertionError("could not run cell %d" % index)
    browser.wait(lambda d: any(marker in e.text or "Traceback" in e.text or "Error" in e.text
                               for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")),
                 timeout, "cell %d's output" % index)
    selector = ".jp-OutputArea-output"
    outputs = browser.wait(lambda d: "\n".join(e.text for e in d.find_elements(By.CSS_SELECTOR, selector)), 30,
                           "cell %d's output text" % index)
    assert marker in outputs, "cell %d failed:\n%s" % (index, outputs[-4000:])
    return outputs


@pytest.fixture(scope="module")
def alice_ran_the_cell(alice):
    """alice logged in, her server started, and the notebook's first cell ran: its output text."""
    alice.login("alice")
    alice.wait(lambda d: "/user/alice/lab" in d.current_url, 240, "alice's JupyterLab after login")
    return {"text": run_cell(alice, 0, "DASHBOARD=", 900)}


def dashboard_link(outputs):
    link = re.search(r"DASHBOARD=(\S+)", outputs["text"]).group(1)
    parts = urllib.parse.urlsplit(link)
    match = re.search(r"/user/alice/proxy/(\d+)/status$", parts.path)
    assert match, "the dashboard link does not go through alice's server proxy: %s" % link
    return link, int(match.group(1)), urllib.parse.parse_qs(parts.query)["token"][0]


# --- TLS, as any client sees it --------------------------------------------------------------------------------------


def test_the_hub_presents_a_chain_to_the_site_ca_for_its_name(hub):
    ctx = ssl.create_default_context(cafile=str(hub["ca"]))
    with socket.create_connection((address(HOST), hub["port"]), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        cert = tls.getpeercert()
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert ("DNS", HOST) in cert["subjectAltName"]
    # A client that does not trust the site CA refuses it (nothing self-signed or public is in the way).
    bare = ssl.create_default_context()
    bare.load_default_certs()
    with socket.create_connection((address(HOST), hub["port"]), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            bare.wrap_socket(raw, server_hostname=HOST)


def test_plain_http_gets_no_hub(hub):
    with socket.create_connection((address(HOST), hub["port"]), timeout=10) as raw:
        raw.sendall(b"GET /hub/login HTTP/1.1\r\nHost: login\r\n\r\n")
        raw.settimeout(10)
        try:
            answer = raw.recv(65536)
        except (ConnectionError, TimeoutError, socket.timeout):
            answer = b""
    assert b"password" not in answer.lower() and b"jupyterhub" not in answer.lower()


def test_only_the_hubs_https_port_listens_beyond_loopback(hub):
    hub_pid = sh("systemctl", "show", "--property=MainPID", "--value", "jupyterhub", host=HOST).stdout.strip()
    proxy_pids = sh("pgrep", "-f", "configurable-http-proxy", host=HOST, check=False).stdout.split()
    assert hub_pid not in ("", "0") and proxy_pids, "the hub or its proxy is not running"
    lines = [line for line in sh("ss", "-Htlnp", host=HOST).stdout.splitlines()
             if any("pid=%s," % pid in line for pid in [hub_pid, *proxy_pids])]
    # The HTTPS port on the login host's own address only (not every interface), as Prometheus's.
    assert {line.split()[3] for line in lines if line.split()[3].endswith(":%d" % hub["port"])} == \
        {"%s:%d" % (address(HOST), hub["port"])}, lines
    for line in lines:
        local = line.split()[3]
        if not local.endswith(":%d" % hub["port"]):
            assert local.startswith(("127.0.0.1:", "[::1]:")), "a hub service listens beyond loopback: " + line


def test_prometheus_scrapes_the_hubs_metrics_with_its_read_only_token(hub):
    import http.client

    from test_metrics import PROMETHEUS_HOST, query, wait_for

    # Prometheus presents its token (roles/prometheus) over HTTPS checked against the site CA.
    samples = wait_for("Prometheus's scrape of the hub", lambda: query('up{job="jupyterhub"} == 1'), timeout=180)
    assert samples[0]["metric"]["instance"] == "%s:%d" % (HOST, hub["port"])
    own = '{job="jupyterhub", __name__=~"jupyterhub_.+"}'
    assert wait_for("the hub's own series in Prometheus", lambda: query(own), timeout=120)
    # The token may read metrics and nothing else: not the users, not the servers.
    token = sh("cat", "/etc/prometheus/jupyterhub-token", host=PROMETHEUS_HOST).stdout.strip()
    ctx = ssl.create_default_context(cafile=str(hub["ca"]))
    for path, allowed in (("/hub/metrics", True), ("/hub/api/users", False), ("/hub/api/users/alice", False)):
        conn = http.client.HTTPSConnection(HOST, hub["port"], context=ctx, timeout=10)
        conn.request("GET", path, headers={"Authorization": "token " + token})
        response = conn.getresponse()
        body = response.read()
        if allowed:
            assert response.status == 200 and b"jupyterhub_" in body, (path, response.status)
        else:
            assert response.status in (403, 404) and b'"server"' not in body, (path, response.status, body[:200])


def test_the_hubs_metrics_need_a_token(hub):
    import http.client

    ctx = ssl.create_default_context(cafile=str(hub["ca"]))
    conn = http.client.HTTPSConnection(HOST, hub["port"], context=ctx, timeout=10)
    conn.request("GET", "/hub/metrics")
    response = conn.getresponse()
    body = response.read()
    assert response.status in (401, 403) and b"jupyterhub_" not in body


# --- alice's notebook ------------------------------------------------------------------------------------------------


def test_alice_runs_a_burstcluster_from_a_notebook(alice_ran_the_cell):
    text = alice_ran_the_cell["text"]
    assert "SUM=%d" % sum(range(1_000_000)) in text
    # The cluster's live display (BurstCluster's progress line in its widget) and the status text.
    assert re.search(r"PROGRESS=.*\d+/\d+ workers", text), text[-2000:]


def test_alices_server_runs_as_alice_from_the_site_environment(alice_ran_the_cell):
    pids = single_user_pids("alice")
    assert pids, "no single-user server of alice's"
    for pid in pids:
        owner = sh("ps", "-o", "user=,args=", "-p", pid, host=HOST).stdout.strip()
        assert owner.startswith("alice "), owner
        assert "/opt/daskhpc/venv/bin/" in owner, owner
    # It listens on loopback only.
    ports = sh("ss", "-Htlnp", host=HOST).stdout
    for line in ports.splitlines():
        if any("pid=%s," % pid in line for pid in pids):
            assert line.split()[3].startswith("127.0.0.1:"), line


def test_alice_opens_the_dashboard_through_her_server_proxy(alice, alice_ran_the_cell):
    link, port, _token = dashboard_link(alice_ran_the_cell)
    alice.get(link)
    alice.wait(lambda d: d.current_url.split("?")[0].endswith("/user/alice/proxy/%d/status" % port)
               and "?token=" not in d.current_url, 60, "the dashboard after its token became a cookie")
    # The page's title comes from the Bokeh document over its websocket: the plots are live.
    alice.wait(lambda d: d.title == "Dask: Status", 60, "the dashboard's Bokeh session (title Dask: Status)")
    # The cookie opens the dashboard's other pages through the proxy too.
    page = alice.get("/user/alice/proxy/%d/json/identity.json" % port)
    assert "OwnerScheduler" in page
    # The scheduler's dashboard port itself is on loopback only: no open port on the login host's address.
    with pytest.raises(OSError):
        socket.create_connection((address(HOST), port), timeout=5).close()


# --- bob and mallory -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bob(hub, browser_home, alice_ran_the_cell):
    browser = Browser(browser_home, hub)
    try:
        browser.login("bob")
        browser.wait(lambda d: "/hub/login" not in d.current_url, 120, "bob's login")
        yield browser
    finally:
        browser.quit()


def test_bob_cannot_open_alices_server(bob):
    page = bob.get("/user/alice/lab")
    time.sleep(3)
    assert "/user/alice/lab" not in bob.driver.current_url or "403" in bob.text(), bob.driver.current_url
    assert not bob.driver.find_elements("css selector", ".jp-LabShell")
    page = bob.get("/user/alice/api/contents/%s" % NOTEBOOK)
    assert "DASHBOARD" not in page and "BurstCluster" not in page


def test_bob_cannot_open_alices_dashboard_even_with_its_link(bob, alice_ran_the_cell):
    link, port, token = dashboard_link(alice_ran_the_cell)
    for path in (link, "/user/alice/proxy/%d/json/identity.json?token=%s" % (port, token)):
        page = bob.get(path)
        time.sleep(2)
        assert "bokeh" not in page.lower() and "OwnerScheduler" not in page, (path, bob.driver.current_url)
        assert bob.driver.title != "Dask: Status"
        assert "/user/alice/proxy/" not in bob.driver.current_url or "403" in bob.text()


def test_bob_on_the_login_host_cannot_use_alices_server_port(alice_ran_the_cell):
    _link, dport, token = dashboard_link(alice_ran_the_cell)
    listening = sh("ss", "-Htlnp", host=HOST).stdout
    pids = single_user_pids("alice")
    server_ports = [int(line.split()[3].rsplit(":", 1)[1]) for line in listening.splitlines()
                    if any("pid=%s," % pid in line for pid in pids)]
    server_ports = [p for p in server_ports if p != dport]
    assert server_ports, "alice's server port not found:\n" + listening
    for port in server_ports:
        for path in ("/user/alice/api/contents", "/user/alice/api/kernels",
                     "/user/alice/proxy/%d/status?token=%s" % (dport, token)):
            code = sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d%s" % (port, path),
                      user="bob", check=False).stdout.strip()
            assert code in ("302", "401", "403", "000"), (port, path, code)


def test_bob_cannot_use_the_proxys_routing_api(hub):
    """The proxy's routing API (loopback) answers only the hub's token: bob cannot route alice's URLs to himself."""
    api = "http://127.0.0.1:8001/api/routes"
    for extra in ([], ["-H", "Authorization: token guess"]):
        code = sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *extra, api, user="bob", check=False)
        assert code.stdout.strip() == "403", (extra, code.stdout, code.stderr)
    code = sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", '{"target": "http://127.0.0.1:1"}',
              api + "/user/alice", user="bob", check=False)
    assert code.stdout.strip() == "403", code.stdout
    # And it is not reachable from beyond the login host at all.
    with pytest.raises(OSError):
        socket.create_connection((address(HOST), 8001), timeout=5).close()


def test_mallory_outside_the_burst_groups_cannot_log_in(hub, browser_home):
    browser = Browser(browser_home, hub)
    try:
        browser.login("mallory")
        time.sleep(5)
        assert "/user/mallory" not in browser.driver.current_url
        assert "/hub/login" in browser.driver.current_url or "403" in browser.text()
        assert not single_user_pids("mallory")
    finally:
        browser.quit()


def test_a_wrong_password_does_not_log_alice_in(hub, browser_home):
    from selenium.webdriver.common.by import By

    browser = Browser(browser_home, hub)
    try:
        browser.get("/hub/login")
        browser.driver.find_element(By.ID, "username_input").send_keys("alice")
        browser.driver.find_element(By.ID, "password_input").send_keys("not-" + password("alice"))
        browser.driver.find_element(By.ID, "login_submit").click()
        time.sleep(3)
        assert "/hub/login" in browser.driver.current_url and "/user/alice" not in browser.driver.current_url
    finally:
        browser.quit()


def test_alice_closes_her_cluster_from_the_notebook(alice, alice_ran_the_cell):
    assert "CLOSED" in run_cell(alice, 1, "CLOSED", 180)


# bob's stand-in server: binds `port` as soon as it is free, then answers every connection it gets with a marker.
HIJACKER = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + seconds
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the dead server's TIME_WAIT connections
while True:
    try:
        listener.bind(("127.0.0.1", port))
        break
    except OSError:
        if time.monotonic() > deadline:
            print("NEVER-BOUND", flush=True)
            sys.exit(1)
        time.sleep(0.01)
listener.listen(8)
listener.settimeout(0.5)
print("BOUND", flush=True)
while time.monotonic() < deadline:
    try:
        conn, _ = listener.accept()
    except socket.timeout:
        continue
    with conn:
        print("ACCEPTED", flush=True)
        conn.settimeout(2)
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\nHIJACKED-BY-BOB")
        except OSError:
            pass
"""


def start_hijacker(port, seconds):
    """bob's stand-in on `port`, as bob on the login host; its first line says when it holds the port."""
    command = remote_command(["python3", "-c", HIJACKER, str(port), str(seconds)])
    return subprocess.Popen([*ssh_argv("bob", HOST), command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)


def fetch_as_root(url):
    """What a client on the login host running as root (as the proxy does) gets from `url` within 5 s."""
    fetched = sh("curl", "-s", "--max-time", "5", "--cacert", "/etc/daskhpc/tls/ca.pem", url, host=HOST, check=False)
    return fetched.stdout


def port_owners():
    """The login host's (port . uid) owners of the hub's ports, one line."""
    listed = sh("nft", "list", "set", "inet", "daskhpc_jupyterhub", "owners", host=HOST).stdout
    return " ".join(listed.split()).replace(",", " ")


def test_bob_cannot_take_over_alices_server_port_when_her_server_dies(hub, alice, alice_ran_the_cell):
    """Any user may bind a free port: bob waits for alice's server to die and binds its port at once.

    What the proxy still routes to alice's server (and anyone on the host) must not reach him: the
    kernel drops every packet his socket sends from her port (jupyterhub-ports.nft). A port outside
    the guarded ones shows that his stand-in answers otherwise.
    """
    (pid,) = single_user_pids("alice")
    listening = sh("ss", "-Htlnp", host=HOST).stdout.splitlines()
    ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in listening if "pid=%s," % pid in line}
    (port,) = [p for p in ports if 20000 <= p <= 20999]  # jupyterhub_server_ports

    control = start_hijacker(19999, 15)
    try:
        assert control.stdout.readline().strip() == "BOUND"
        assert "HIJACKED-BY-BOB" in fetch_as_root("http://127.0.0.1:19999/")
    finally:
        control.kill()

    thief = start_hijacker(port, 150)
    try:
        time.sleep(2)  # bob is polling for the port
        sh("kill", "-KILL", pid, host=HOST)
        assert thief.stdout.readline().strip() == "BOUND"  # he has her port
        assert "HIJACKED-BY-BOB" not in fetch_as_root("http://127.0.0.1:%d/user/alice/api/status" % port)
        assert "HIJACKED-BY-BOB" not in fetch_as_root(hub["url"] + "/user/alice/api/status")
        # The hub notices (its poll, every 30 s) and gives the port up: it has no owner, so still not bob.
        deadline = time.monotonic() + 100
        while " %d . " % port in port_owners() and time.monotonic() < deadline:
            time.sleep(3)
        assert " %d . " % port not in port_owners()
        assert "HIJACKED-BY-BOB" not in fetch_as_root("http://127.0.0.1:%d/" % port)
    finally:
        thief.kill()
        rest = thief.communicate(timeout=30)[0]
    assert "ACCEPTED" not in rest, rest  # no connection to him was ever established
    sh("pkill", "-KILL", "-u", "alice", "-f", "ipykernel", host=HOST, check=False)
