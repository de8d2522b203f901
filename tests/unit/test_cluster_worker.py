"""daskhpc.worker: SIGTERM hands the worker's data off instead of losing it; --nworkers forks named workers;
it fails closed on TLS and leaves when its job step is gone."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import pytest
from client_helpers import USER, make_pki, python_with_site_file, tls_section, wait_for, write_site_file
from distributed import Client, LocalCluster, Security

from daskhpc.security import IdentitySecurity
from daskhpc.worker import check_tls_policy, parse_args, worker_kwargs

# The workers below read this site file (TLS optional) instead of /etc/dask/daskhpc.yaml.
OPTIONAL_TLS = {"site": "unit", "partition": "burst", "qos": "burst", "account": "burst", "tls": {"mode": "optional"}}


@pytest.fixture(scope="module")
def optional_site(tmp_path_factory):
    return write_site_file(tmp_path_factory.mktemp("site") / "daskhpc.yaml", OPTIONAL_TLS)


# A grace time well beyond what moving the test's data takes even on a saturated machine: retirement ends as
# soon as the data has moved, and a short one made the data-kept test fail under load (event loop stalled 11 s).
GRACE_TIME = 120


def worker_argv(site_path, address, name, *extra):
    return python_with_site_file(site_path) + ["daskhpc.worker", address, "--name", name, "--nthreads", "1",
                                               "--memory-limit", "500MB", "--grace-time", str(GRACE_TIME), *extra]


def start_worker(address, name, *extra, site_path):
    return subprocess.Popen(worker_argv(site_path, address, name, *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture()
def scheduler():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


def test_sigterm_retires_gracefully_and_keeps_the_data(scheduler, optional_site):
    proc = start_worker(scheduler.scheduler.address, "burst-0", site_path=optional_site)
    try:
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == 2)
        addr = next(a for a, w in scheduler.scheduler_info()["workers"].items() if w["name"] == "burst-0")
        futures = scheduler.map(lambda i: list(range(i * 1000)), range(20), workers=[addr], pure=False)
        scheduler.gather(futures)
        keys_there = scheduler.who_has(futures)
        assert all(addr in holders for holders in keys_there.values())
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=GRACE_TIME + 60)[0]
        assert proc.returncode == 0, output
        assert "retiring gracefully" in output
        # The data moved to the other worker: nothing is recomputed, nothing is lost.
        holders = scheduler.who_has(futures)
        assert all(holders[f.key] and addr not in holders[f.key] for f in futures)
        assert scheduler.gather(futures)[5] == list(range(5000))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_nworkers_forks_named_workers_and_sigterm_reaches_them_all(scheduler, optional_site):
    proc = start_worker(scheduler.scheduler.address, "job-7", "--nworkers", "3", site_path=optional_site)
    try:
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == 4)
        names = sorted(str(w["name"]) for w in scheduler.scheduler_info()["workers"].values())
        assert names == ["0", "job-7-0", "job-7-1", "job-7-2"]
        os.kill(proc.pid, signal.SIGTERM)  # --signal=B:TERM reaches only the job's main process
        proc.communicate(timeout=GRACE_TIME + 60)
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == 1)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_workers_http_server_serves_only_health_on_loopback(scheduler, optional_site, tmp_path):
    """Another user on the compute host (or the network) gets no /metrics or pages from a user's worker, even
    when that user's own Dask config asks for the worker's Prometheus route."""
    import urllib.error
    import urllib.request

    user_config = tmp_path / "dask"
    user_config.mkdir()
    (user_config / "mine.yaml").write_text(
        "distributed:\n  worker:\n    http:\n"
        "      routes: [distributed.http.worker.prometheus, distributed.http.health]\n")
    proc = subprocess.Popen(worker_argv(optional_site, scheduler.scheduler.address, "probe-0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, DASK_CONFIG=str(user_config)))
    try:
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == 2)
        info = next(w for w in scheduler.scheduler_info()["workers"].values() if w["name"] == "probe-0")
        port = info["services"]["dashboard"]
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=10) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10)
        import socket

        import psutil

        outside = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")]
        assert outside, "this machine has no address but loopback to try from"
        for address in outside:
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=5).close()
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_command_line_like_dask_worker():
    args = parse_args(["tls://10.0.0.1:8786", "--name", "w-1", "--nthreads", "2", "--memory-limit", "1GiB",
                       "--death-timeout", "60", "--lifetime", "3180s", "--lifetime-stagger", "180s",
                       "--resources", "GPU=1,MEM=2", "--interface", "lo"])
    kwargs = worker_kwargs(args, "w-1-0")
    assert kwargs["name"] == "w-1-0" and kwargs["nthreads"] == 2 and kwargs["memory_limit"] == "1GiB"
    assert kwargs["death_timeout"] == 60 and kwargs["lifetime"] == "3180s"
    assert kwargs["resources"] == {"GPU": 1.0, "MEM": 2.0} and kwargs["interface"] == "lo"
    assert "security" not in kwargs and kwargs["dashboard"] is False
    assert kwargs["dashboard_address"] == "127.0.0.1:0"  # a shared compute host: nothing on its network


# --- fail closed ------------------------------------------------------------------------------------------


def test_worker_without_tls_refuses_to_start_where_the_site_requires_it(scheduler, tmp_path):
    required = write_site_file(tmp_path / "daskhpc.yaml", dict(OPTIONAL_TLS, tls={"mode": "required"}))
    proc = start_worker(scheduler.scheduler.address, "plain-0", "--death-timeout", "20", site_path=required)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2, output
    assert "the site requires TLS" in output and "Not starting" in output
    assert len(scheduler.scheduler_info()["workers"]) == 1  # only the fixture's own worker


@pytest.mark.parametrize("argv", [
    ["tcp://10.0.0.1:8786", "--name", "w"],
    ["tls://10.0.0.1:8786", "--name", "w", "--tls-cert", "/c.pem", "--tls-key", "/c.key"],  # no CA: no check
    ["tls://10.0.0.1:8786", "--name", "w", "--tls-ca-file", "/ca", "--tls-cert", "/c", "--tls-key", "/k",
     "--protocol", "tcp"],
])
def test_tls_policy_check_refuses_every_incomplete_command_line(argv):
    from daskhpc.worker import WorkerPolicyError

    with pytest.raises(WorkerPolicyError, match="requires TLS"):
        check_tls_policy(parse_args(argv), policy={"tls": {"mode": "required"}})
    check_tls_policy(parse_args(argv), policy={"tls": {"mode": "optional"}})


def test_worker_tls_is_always_bound_to_its_user():
    args = parse_args(["tls://10.0.0.1:8786", "--name", "w", "--tls-ca-file", "/ca", "--tls-cert", "/c",
                       "--tls-key", "/k"])
    security = worker_kwargs(args, "w-0")["security"]
    assert isinstance(security, IdentitySecurity) and security.owner == USER


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), users=(USER, "bob"))


@pytest.mark.parametrize("scheduler_user,stock,joins", [
    (USER, False, True),    # the user's own scheduler: daskhpc.worker joins
    ("bob", True, True),    # bob's scheduler: a stock, chain-only `dask worker` with the user's credential joins
    ("bob", False, False),  # ... daskhpc.worker does not
])
def test_worker_refuses_a_scheduler_with_another_users_valid_certificate(pki, tmp_path, scheduler_user, stock,
                                                                         joins):
    site_path = write_site_file(tmp_path / "daskhpc.yaml", dict(OPTIONAL_TLS, tls=tls_section(pki)))
    chain_only = Security(require_encryption=True, tls_ca_file=pki["ca"],
                          tls_scheduler_cert=pki[scheduler_user]["cert"], tls_scheduler_key=pki[scheduler_user]["key"],
                          tls_client_cert=pki[scheduler_user]["cert"], tls_client_key=pki[scheduler_user]["key"])
    tls_args = ["--tls-ca-file", pki["ca"], "--tls-cert", pki[USER]["cert"], "--tls-key", pki[USER]["key"]]
    with LocalCluster(n_workers=0, processes=False, protocol="tls", host="127.0.0.1", security=chain_only,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        if stock:
            proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                                     "--no-nanny", "--nthreads", "1", "--death-timeout", "15", *tls_args],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        else:
            proc = start_worker(cluster.scheduler_address, "w", "--death-timeout", "15", *tls_args,
                                site_path=site_path)
        try:
            if joins:
                assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, 60)
            else:
                output = proc.communicate(timeout=90)[0]
                assert proc.returncode != 0 and not client.scheduler_info()["workers"], output[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- a worker whose job step is gone leaves -----------------------------------------------------------------


def alive(pid):
    try:
        with open("/proc/%d/status" % pid) as handle:
            state = next(line for line in handle if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state.split()[1] not in ("Z", "X")  # a zombie has exited, whoever reaps it


@pytest.mark.parametrize("extra", [[], ["--nworkers", "2"]])
def test_worker_leaves_when_its_parent_is_gone(scheduler, optional_site, extra):
    """The job step (here: a shell) is killed; its worker must not live on outside any job."""
    command = shlex.join(worker_argv(optional_site, scheduler.scheduler.address, "orphan", *extra))
    step = subprocess.Popen(["sh", "-c", "%s & echo $!; wait" % command], stdout=subprocess.PIPE, text=True)
    pid = int(step.stdout.readline())
    try:
        wanted = 1 + (int(extra[1]) if extra else 1)
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == wanted, 60)
        step.kill()
        step.wait()
        assert wait_for(lambda: not alive(pid), 60), "the orphaned worker is still running"
        assert wait_for(lambda: len(scheduler.scheduler_info()["workers"]) == 1, 30)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
