"""Observability on the lab: the real exporter service (ctl), the real Prometheus (svc), real SLURM.

Prometheus and the exporter are read over the lab network, as Grafana or an operator would;
squeue and sinfo run on the controller; a data scientist's scheduler runs as alice on login.
Other helpers' tests share this slurmctld, so jobs come and go: the comparison with squeue/sinfo
is made when the batch system held still around the exporter's refresh (read before and after;
retried until both readings agree).
"""

from __future__ import annotations

import base64
import collections
import json
import os
import posixpath
import ssl
import textwrap
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from burst_helpers import PREAMBLE, USER
from conftest import LAB_INVENTORY, Spawned, adhoc, inventory_group, run_playbook, sh, write_file

pytestmark = pytest.mark.lab

with open(LAB_INVENTORY / "group_vars" / "all" / "site.yml") as _fh:
    _METRICS = yaml.safe_load(_fh)["daskhpc_site"]["metrics"]
PROMETHEUS_HOST = inventory_group("prometheus")[0]       # svc
EXPORTER_HOST = inventory_group("slurm_controller")[0]   # ctl: the exporter runs next to slurmctld
# Prometheus's web endpoint: HTTPS under its host's name, basic auth (as an operator or Grafana would).
PROMETHEUS = "https://%s:%d" % (PROMETHEUS_HOST, _METRICS["prometheus_port"])
# The exporter serves Prometheus's service certificate only: it is read from the Prometheus host with it.
EXPORTER = "https://%s:%d/metrics" % (EXPORTER_HOST, _METRICS["exporter_port"])
EXPORTER_BIN = "/opt/daskhpc/exporter/bin/daskhpc"
SITE_CA = os.path.expanduser("~/.cache/daskhpc/lab/ca.pem")  # fetched by playbooks/user_credentials.yml
with open(LAB_INVENTORY / "group_vars" / "all" / "lab_secrets.yml") as _fh:
    _PROMETHEUS_PASSWORD = yaml.safe_load(_fh)["daskhpc_prometheus_password"]
AS_PROMETHEUS = ["--cacert", "/etc/daskhpc/tls/ca.pem", "--cert", "/etc/daskhpc/tls/prometheus.pem",
                 "--key", "/etc/daskhpc/tls/prometheus.key"]


def get(url, timeout=10):
    """GET from Prometheus's web endpoint as its operator."""
    request = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(
        ("daskhpc-admin:%s" % _PROMETHEUS_PASSWORD).encode()).decode()})
    context = ssl.create_default_context(cafile=SITE_CA)
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return response.read().decode()


def scrape_exporter(url=EXPORTER):
    """The exporter's answer to Prometheus: curl on the Prometheus host with its service certificate."""
    return sh("curl", "-sSf", "--max-time", "10", *AS_PROMETHEUS, url, host=PROMETHEUS_HOST).stdout


def prom(path, **params):
    body = json.loads(get(PROMETHEUS + path + ("?" + urllib.parse.urlencode(params) if params else "")))
    assert body["status"] == "success", body
    return body["data"]


def query(expr):
    return prom("/api/v1/query", query=expr)["result"]


def wait_for(what, check, timeout=120, interval=2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


@pytest.fixture(scope="module")
def metrics(lab, lab_site):
    run = run_playbook("metrics.yml")
    assert run.rc == 0 and run.failed == 0, run.output[-6000:]
    wait_for("Prometheus to scrape the exporter",
             lambda: [r for r in query('up{job="daskhpc_exporter"}') if r["value"][1] == "1"])
    return lab_site


# --- what squeue and sinfo say, read independently of the exporter's formats ------------------


def direct_state():
    cores = {}
    for line in sh("sinfo", "--all", "--noheader", "-o", "%R|%C").stdout.split():
        partition, counts = line.split("|")
        alloc, idle, other, _total = (int(x) for x in counts.split("/"))
        cores[partition] = {"allocated": alloc, "idle": idle, "other": other}
    jobs = collections.Counter()
    # -r: one line per array task, to check the exporter's counting of collapsed arrays
    for line in sh("squeue", "--all", "--noheader", "-r", "--states=all", "-o", "%P|%T").stdout.split():
        partition, state = line.split("|")
        jobs[(partition.split(",")[0], state.lower())] += 1
    burst = collections.Counter()
    for line in sh("squeue", "--all", "--noheader", "-p", "burst", "-t", "R", "-o", "%u|%C").stdout.split():
        user, cpus = line.split("|")
        burst[user] += int(cpus)
    return {"cores": cores, "jobs": dict(jobs), "burst": dict(burst)}


def prometheus_state():
    cores = collections.defaultdict(dict)
    for r in query('daskhpc_partition_cores{job="daskhpc_exporter"}'):
        cores[r["metric"]["partition"]][r["metric"]["state"]] = int(float(r["value"][1]))
    jobs = {(r["metric"]["partition"], r["metric"]["state"]): int(float(r["value"][1]))
            for r in query('daskhpc_jobs{job="daskhpc_exporter"} > 0')}
    burst = {r["metric"]["user"]: int(float(r["value"][1]))
             for r in query('daskhpc_burst_cores{job="daskhpc_exporter"} > 0')}
    return {"cores": dict(cores), "jobs": jobs, "burst": burst}


def last_refresh():
    result = query('daskhpc_last_success_timestamp_seconds{job="daskhpc_exporter", source="state"}')
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture
def held_array():
    """Five held array tasks in prod: they show as pending (JobHeldUser) and use no cores."""
    job_id = sh("sbatch", "--parsable", "--hold", "-p", "prod", "--array=1-5", "-o", "/dev/null",
                "--wrap", "true").stdout.strip().split(";")[0]
    yield job_id
    sh("scancel", job_id, check=False)


def test_prometheus_values_equal_squeue_and_sinfo(metrics, held_array):
    for _attempt in range(8):
        before = direct_state()
        started = time.time()
        # the exporter refreshed after our reading, and Prometheus has scraped that refresh
        wait_for("a refresh scraped by Prometheus", lambda since=started: last_refresh() > since, timeout=90)
        seen = prometheus_state()
        after = direct_state()
        if before == after:
            break
    else:
        pytest.fail("the batch system never held still for a comparison")
    assert seen["cores"] == before["cores"]
    assert seen["jobs"] == before["jobs"]
    assert seen["burst"] == before["burst"]
    assert before["jobs"][("prod", "pending")] >= 5
    pending = query('daskhpc_jobs_pending{partition="prod", reason="JobHeldUser"}')
    assert pending and float(pending[0]["value"][1]) >= 5


def test_exporter_runs_unprivileged_and_its_output_passes_promtool(metrics, lab_hosts):
    services = adhoc(lab_hosts, EXPORTER_HOST, "service_facts")[EXPORTER_HOST]["ansible_facts"]["services"]
    assert services["daskhpc-exporter.service"]["state"] == "running", services.get("daskhpc-exporter.service")
    pid = int(sh("systemctl", "show", "--property=MainPID", "--value", "daskhpc-exporter",
                 host=EXPORTER_HOST).stdout)
    assert pid > 0
    process = adhoc(lab_hosts, EXPORTER_HOST, "stat", path="/proc/%d" % pid)[EXPORTER_HOST]["stat"]
    assert process["pw_name"] == "daskhpc-exporter"
    text = scrape_exporter()
    assert "daskhpc_up 1.0" in text
    # Prometheus's own checker, where Prometheus is installed
    proc = sh("promtool", "check", "metrics", host=PROMETHEUS_HOST, input=text, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_loaded_the_rules(metrics):
    groups = prom("/api/v1/rules")["groups"]
    alerts = {rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"}
    assert {"DaskhpcExporterDown", "DaskhpcProductionPendingBehindBurst", "DaskhpcBurstShareAboveCap"} <= alerts
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])
    # the recording rules produce the curated views from live data
    assert query("daskhpc:cluster_cores_allocated:ratio")


# --- Dask schedulers through discovery ---------------------------------------------------------

SCHEDULER_SCRIPT = PREAMBLE + textwrap.dedent("""\
    from daskhpc import BurstCluster

    # No workers: the scheduler alone registers through discovery and serves /metrics over mutual TLS.
    with BurstCluster(progress=False) as cluster:
        event("registered", [cluster.scheduler_info["id"], cluster._discovery_path])
        wait_for("close", 600)
    event("closed")
    """)


def dask_targets(cluster_id):
    return [t for t in prom("/api/v1/targets")["activeTargets"]
            if t["labels"].get("job") == "dask" and t["labels"].get("cluster_id") == cluster_id]


def test_live_dask_scheduler_becomes_a_target_and_goes_away(metrics, user_script):
    """alice's scheduler on the login host registers through discovery; Prometheus on svc scrapes it."""
    targets_dir = metrics["metrics"]["dask_targets_dir"]
    script = user_script(USER)
    proc = script.start(SCHEDULER_SCRIPT)
    cluster_id, path = script.event("registered", 120)
    if not path:
        script.mark("close")
        pytest.fail("the scheduler on the login host could not register in %s:\n%s" % (
            targets_dir, proc.finish(60).stderr[-3000:]))
    try:
        assert posixpath.dirname(path) == targets_dir
        targets = wait_for("the scheduler as an up target", lambda: [
            t for t in dask_targets(cluster_id) if t["health"] == "up"], timeout=120)
        assert targets[0]["labels"]["user"] == USER
        assert targets[0]["labels"]["site"] == "lab"
        assert targets[0]["scrapeUrl"].startswith("https://")
        # Dask's own metrics arrive with the user's label (the cluster has no workers)
        workers = wait_for("dask_scheduler_workers", lambda: query(
            'sum(dask_scheduler_workers{cluster_id="%s", user="%s"})' % (cluster_id, USER)))
        assert float(workers[0]["value"][1]) == 0
    finally:
        script.mark("close")
        done = proc.finish(60)
    assert done.returncode == 0 and "EVENT closed" in done.stdout, done.stdout + done.stderr[-3000:]
    assert sh("test", "-e", path, host="login", check=False).returncode == 1
    wait_for("the target to disappear", lambda: not dask_targets(cluster_id), timeout=120)


# --- batch system down ---------------------------------------------------------------------------


FREE_PORT = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"


def test_exporter_keeps_serving_when_the_batch_system_is_down(metrics):
    """A second exporter (the installed one, on ctl) whose squeue/sinfo do not exist; the shared slurmctld
    and the site's exporter are untouched."""
    host = EXPORTER_HOST
    workdir = sh("mktemp", "-d", "/tmp/daskhpc-it-exporter-XXXXXX", host=host).stdout.strip()
    port = int(sh("python3", "-c", FREE_PORT, host=host).stdout)
    write_file(workdir + "/exporter.yaml", yaml.safe_dump({
        "listen_address": "127.0.0.1", "listen_port": port, "min_interval_seconds": 0,
        "burst_partitions": ["burst"], "production_partitions": ["prod", "bigmem"],
        "slurm_bin_dir": workdir + "/no-slurm-here", "ledger_path": workdir + "/no-ledger.jsonl",
    }), host=host)
    proc = Spawned(EXPORTER_BIN, "exporter", "--config", workdir + "/exporter.yaml", host=host)
    try:
        url = "http://127.0.0.1:%d/metrics" % port  # without tls the exporter serves loopback only

        def scrape():
            answer = sh("curl", "-sSf", "--max-time", "10", url, host=host, check=False)
            return answer.stdout if answer.returncode == 0 else None

        first = wait_for("the exporter to listen", scrape, timeout=30, interval=0.5)
        second = scrape()
        assert "daskhpc_up 0.0" in first and "daskhpc_up 0.0" in second
        assert 'daskhpc_scrape_errors_total{source="state"} 2.0' in second
        assert "daskhpc_partition_cores" not in second
        assert "daskhpc_ca_ledger_present 0.0" in second
        assert proc.running()
    finally:
        proc.stop()
        sh("rm", "-rf", workdir, host=host, check=False)
    assert "daskhpc_up 1.0" in scrape_exporter()
