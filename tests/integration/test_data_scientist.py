"""The data scientist's first hour on the lab, as alice on the login host (docs/data-scientists.md).

Dataframes on parquet in her home with the site's environment and no size given (adapt); her own
environment with a package the site's does not hold, on the workers; an environment that does not match,
refused before anything is submitted, with the fix; a worker that cannot import a module, reported in her
client with the module and the log's path; the site's Python reached the HPC way (module, login PATH).
"""

from __future__ import annotations

import pytest
from burst_helpers import PREAMBLE, PYTHON, USER, cluster_job_ids, result_of
from conftest import inventory_group, sh

pytestmark = pytest.mark.lab

SITE_VENV = PYTHON.rsplit("/bin/", 1)[0]
WHEELHOUSE = "/var/cache/daskhpc/wheelhouse"
# In the lab's wheelhouse (inventories/lab: site_python_wheelhouse_extra) but not in the site's environment.
EXTRA = "tabulate"


@pytest.fixture(scope="module")
def site_env(lab):
    assert sh("getent", "passwd", USER, host="login", check=False).returncode == 0, "%s does not resolve" % USER
    return lab


DATAFRAME_SCRIPT = PREAMBLE + r'''
import numpy as np
import pandas as pd
import dask.dataframe as dd
from daskhpc import BurstCluster

def versions():
    import importlib.metadata
    return {name: importlib.metadata.version(name) for name in ("pandas", "pyarrow", "bokeh", "dask")}

rng = np.random.RandomState(7)
frame = pd.DataFrame({"key": rng.randint(0, 50, 200_000), "value": rng.randint(0, 1000, 200_000)})
dd.from_pandas(frame, npartitions=16).to_parquet(str(HERE / "data.parquet"))
expected = frame.groupby("key")["value"].sum().sort_index()

out = {}
with BurstCluster() as cluster, cluster.get_client() as client:   # no size: adapts within policy
    out["status_before"] = cluster.status_text()
    got = dd.read_parquet(str(HERE / "data.parquet")).groupby("key")["value"].sum().compute().sort_index()
    out["equal"] = bool(got.equals(expected))
    out["workers_used"] = len(client.scheduler_info()["workers"])
    here = versions()
    there = client.run(versions)
    out["versions_agree"] = all(v == here for v in there.values())
    out["versions"] = here
    client.get_versions(check=True)   # distributed's own check: raises when client and workers differ
report(**out)
'''


def test_dataframe_groupby_on_parquet_equals_pandas(site_env, user_script):
    result = result_of(user_script(USER).run(DATAFRAME_SCRIPT, timeout=900))
    assert result["equal"], result
    assert "adaptive" in result["status_before"], result["status_before"]
    assert result["workers_used"] >= 1
    assert result["versions_agree"], result


VENV_SCRIPT = PREAMBLE + r'''
import sys
from daskhpc import BurstCluster

def where():
    import tabulate
    return tabulate.__file__, tabulate.tabulate([[1, 2]])

with BurstCluster(workers=4, python=sys.executable) as cluster, cluster.get_client() as client:
    path, table = client.submit(where).result(timeout=600)
    report(path=path, table=table, python=sys.executable, script=cluster.job_script())
'''


def test_users_own_environment_runs_on_the_workers(site_env, user_script):
    script = user_script(USER)
    env = script.path("env")
    sh(SITE_VENV + "/bin/daskhpc", "venv", env, user=USER, timeout=300)
    # The lab's hosts have no package index: the wheelhouse the site ships is it.
    sh(env + "/bin/pip", "install", "--quiet", "--no-index", "--find-links", WHEELHOUSE, EXTRA, user=USER, timeout=300)
    assert sh(PYTHON, "-c", "import " + EXTRA, user=USER, check=False).returncode != 0, \
        "the site's environment holds %s already: the test would prove nothing" % EXTRA
    script.python = env + "/bin/python"
    result = result_of(script.run(VENV_SCRIPT, timeout=900))
    assert result["path"].startswith(env + "/lib/"), result
    assert "1  2" in result["table"]
    assert "exec %s -m daskhpc.worker" % (env + "/bin/python") in result["script"]


MISMATCH_SCRIPT = PREAMBLE + r'''
from daskhpc import BurstCluster
from daskhpc.environment import WorkerEnvironmentError
try:
    BurstCluster(workers=4, python=%(python)r)
    report(error=None)
except WorkerEnvironmentError as exc:
    report(error=str(exc))
'''


def test_a_mismatched_environment_is_refused_before_submission_with_the_fix(site_env, user_script):
    script = user_script(USER)
    plain = script.path("plain")
    # The mistake the docs warn about: a venv on the system's Python, without the site's packages.
    sh("/usr/bin/python3", "-m", "venv", "--without-pip", plain, user=USER)
    before = cluster_job_ids()
    message = result_of(script.run(MISMATCH_SCRIPT % {"python": plain + "/bin/python"}, timeout=300))["error"]
    assert message and "distributed" in message and "missing on the workers" in message, message
    assert "nothing was submitted" in message and "daskhpc venv ~/myenv" in message
    assert cluster_job_ids() == before
    doctor = sh(SITE_VENV + "/bin/daskhpc", "doctor", "--python", plain + "/bin/python", user=USER, check=False)
    assert doctor.returncode == 1
    assert any(line.startswith("FAIL  worker environment") for line in doctor.stdout.splitlines()), doctor.stdout


IMPORT_FAILURE_SCRIPT = PREAMBLE + r'''
from daskhpc import BurstCluster
from daskhpc.cluster.base import WorkerStartError
with BurstCluster(workers=4, worker_extra_args=["--preload", "nosuchmodule_for_lab"]) as cluster, \
        cluster.get_client() as client:
    try:
        client.submit(sum, [1, 2]).result(timeout=600)
        report(error=None)
    except WorkerStartError as exc:
        report(error=str(exc), status=cluster.status_text())
'''


def test_a_worker_that_cannot_import_a_module_is_reported_in_the_client(site_env, user_script):
    result = result_of(user_script(USER).run(IMPORT_FAILURE_SCRIPT, timeout=900))
    message = result["error"]
    assert message and "No module named 'nosuchmodule_for_lab'" in message, result
    assert "(log: /home/%s/.daskhpc/logs/dask-worker-" % USER in message
    log = message.split("(log: ", 1)[1].split(")", 1)[0]
    assert "nosuchmodule_for_lab" in sh("cat", log, user=USER).stdout


def test_the_sites_python_is_reached_by_module_and_login_path(site_env):
    loaded = sh("bash", "-lc", "module load daskhpc && command -v python && python -c 'import daskhpc, pandas'",
                user=USER, check=False)
    assert loaded.returncode == 0 and loaded.stdout.split()[0] == PYTHON, loaded.stdout + loaded.stderr
    login = sh("bash", "-lc", "command -v python3", user=USER)
    assert login.stdout.strip() == SITE_VENV + "/bin/python3"
    for host in ["login", *inventory_group("slurm_compute")]:
        assert sh("test", "-f", SITE_VENV + "/constraints.txt", host=host, check=False).returncode == 0, host
    versions = {sh(PYTHON, "-c", "import pandas, pyarrow; print(pandas.__version__, pyarrow.__version__)",
                   host=host).stdout for host in ["login", *inventory_group("slurm_compute")]}
    assert len(versions) == 1, versions
