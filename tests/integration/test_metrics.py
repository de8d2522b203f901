"""Observability on the lab: the real exporter service, the real Prometheus, real SLURM.

Other helpers' tests share this slurmctld, so jobs come and go: the comparison with squeue/sinfo
is made when the batch system held still around the exporter's refresh (read before and after;
retried until both readings agree).
"""

from __future__ import annotations

import collections
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import REPO, LabLock, run_playbook, sh

pytestmark = pytest.mark.lab

PROMETHEUS = "http://localhost:9090"
EXPORTER = "http://localhost:9817/metrics"
EXPORTER_BIN = "/opt/daskhpc/exporter/bin/daskhpc"
SITE_VENV_PYTHON = "/opt/daskhpc/venv/bin/python"


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


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
    with LabLock():
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
    for _ in range(8):
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


def test_exporter_runs_unprivileged_and_its_output_passes_promtool(metrics):
    with open("/run/daskhpc-exporter/daskhpc-exporter.pid", encoding="utf-8") as handle:
        pid = int(handle.read())
    assert pwd.getpwuid(os.stat("/proc/%d" % pid).st_uid).pw_name == "daskhpc-exporter"
    text = get(EXPORTER)
    assert "daskhpc_up 1.0" in text
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_prometheus_loaded_the_rules(metrics):
    groups = prom("/api/v1/rules")["groups"]
    alerts = {rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"}
    assert {"DaskhpcExporterDown", "DaskhpcProductionPendingBehindBurst", "DaskhpcBurstShareAboveCap"} <= alerts
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])
    # the recording rules produce the curated views from live data
    assert query("daskhpc:cluster_cores_allocated:ratio")


# --- Dask schedulers through discovery ---------------------------------------------------------

SCHEDULER_SCRIPT = textwrap.dedent("""\
    import sys
    from distributed import LocalCluster
    from daskhpc import discovery

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        path = discovery.register(cluster, directory=sys.argv[1])
        print(cluster.scheduler_info["id"], path, flush=True)
        sys.stdin.readline()
        discovery.unregister(cluster)
    print("closed", flush=True)
    """)


def scheduler_runner():
    """(argv prefix, user): a lab user with the site environment if there is one, else ourselves."""
    try:
        pwd.getpwnam("alice")
        if os.access(SITE_VENV_PYTHON, os.X_OK):
            return ["runuser", "-u", "alice", "--", SITE_VENV_PYTHON], "alice"
    except KeyError:
        pass
    return [sys.executable], pwd.getpwuid(os.getuid()).pw_name


def dask_targets(cluster_id):
    return [t for t in prom("/api/v1/targets")["activeTargets"]
            if t["labels"].get("job") == "dask" and t["labels"].get("cluster_id") == cluster_id]


@pytest.fixture
def scheduler_script():
    """The scheduler script somewhere a lab user can read it (pytest's tmp_path is root's only)."""
    directory = tempfile.mkdtemp(prefix="daskhpc-metrics-")
    os.chmod(directory, 0o755)
    script = os.path.join(directory, "scheduler.py")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(SCHEDULER_SCRIPT)
    os.chmod(script, 0o644)
    yield script
    shutil.rmtree(directory)


def test_live_dask_scheduler_becomes_a_target_and_goes_away(metrics, scheduler_script):
    targets_dir = metrics["metrics"]["dask_targets_dir"]
    script = scheduler_script
    argv, user = scheduler_runner()
    proc = subprocess.Popen([*argv, str(script), targets_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd="/tmp")
    try:
        cluster_id, path = proc.stdout.readline().split()
        assert os.path.dirname(path) == targets_dir
        targets = wait_for("the scheduler as an up target", lambda: [
            t for t in dask_targets(cluster_id) if t["health"] == "up"], timeout=120)
        assert targets[0]["labels"]["user"] == user
        assert targets[0]["labels"]["site"] == "lab"
        # Dask's own metrics arrive with the user's label
        workers = wait_for("dask_scheduler_workers", lambda: query(
            'sum(dask_scheduler_workers{cluster_id="%s", user="%s"})' % (cluster_id, user)))
        assert float(workers[0]["value"][1]) == 1
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
        proc.wait(timeout=60)
    assert not os.path.exists(path)
    wait_for("the target to disappear", lambda: not dask_targets(cluster_id), timeout=120)


# --- batch system down ---------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_exporter_keeps_serving_when_the_batch_system_is_down(metrics, tmp_path):
    """A second exporter (the installed one) whose squeue/sinfo do not exist; the shared slurmctld is untouched."""
    port = free_port()
    config = tmp_path / "exporter.yaml"
    config.write_text(yaml.safe_dump({
        "listen_address": "127.0.0.1", "listen_port": port, "min_interval_seconds": 0,
        "burst_partitions": ["burst"], "production_partitions": ["prod", "bigmem"],
        "slurm_bin_dir": str(tmp_path / "no-slurm-here"), "ledger_path": str(tmp_path / "no-ledger.jsonl"),
    }))
    exporter = EXPORTER_BIN if os.access(EXPORTER_BIN, os.X_OK) else shutil.which("daskhpc")
    proc = subprocess.Popen([exporter, "exporter", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = "http://127.0.0.1:%d/metrics" % port

        def scrape():
            try:
                return get(url)
            except OSError:
                return None

        first = wait_for("the exporter to listen", scrape, timeout=30, interval=0.5)
        second = get(url)
        assert "daskhpc_up 0.0" in first and "daskhpc_up 0.0" in second
        assert 'daskhpc_scrape_errors_total{source="state"} 2.0' in second
        assert "daskhpc_partition_cores" not in second
        assert "daskhpc_ca_ledger_present 0.0" in second
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert REPO.exists()
