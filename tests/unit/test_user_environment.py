"""Users' own environments on the workers: ``daskhpc venv``, ``BurstCluster(python=...)`` and its version check.

The tests' interpreter stands for the site's Python (client_helpers.lab_config); the users' environments are
real venvs made by ``daskhpc venv`` (without pip, for speed), and a mismatch is real package metadata in the
user's environment, as pip would leave it after installing another version.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from client_helpers import lab_config, site_file

from daskhpc import environment
from daskhpc.cluster.base import BurstCluster
from daskhpc.doctor import Doctor
from daskhpc.environment import WorkerEnvironmentError


@pytest.fixture()
def lab_site(tmp_path):
    with site_file(tmp_path / "site", lab_config()) as path:
        yield Path(path).parent


def make_env(path):
    subprocess.run([sys.executable, "-m", "daskhpc.cli", "venv", "--without-pip", str(path)], check=True,
                   capture_output=True)
    return path / "bin" / "python"


def site_packages(env):
    return Path(subprocess.run([str(env / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())


def fake_install(env, name, version):
    """What pip leaves behind for ``name==version``: a module and its metadata, in the user's environment."""
    target = site_packages(env)
    (target / ("%s_user_module.py" % name.replace("-", "_"))).write_text("WHERE = 'user'\n")
    info = target / ("%s-%s.dist-info" % (name.replace("-", "_"), version))
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version))


def test_daskhpc_venv_sees_the_site_packages_after_its_own(tmp_path):
    python = make_env(tmp_path / "env")
    fake_install(tmp_path / "env", "extra-for-test", "1.0")
    out = subprocess.run([str(python), "-c", "import dask, daskhpc.worker, importlib.metadata as m; "
                          "print(dask.__version__, m.version('extra-for-test'))"],
                         check=True, capture_output=True, text=True).stdout.split()
    assert out == [importlib.metadata.version("dask"), "1.0"]
    assert environment.check(str(python), sys.executable)["packages"]["dask"] == importlib.metadata.version("dask")


def test_daskhpc_venv_refuses_an_existing_path(tmp_path):
    (tmp_path / "env").mkdir()
    done = subprocess.run([sys.executable, "-m", "daskhpc.cli", "venv", str(tmp_path / "env")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "exists already" in done.stderr


def test_cluster_runs_workers_with_the_users_environment(lab_site, tmp_path):
    make_env(lab_site / "home" / "env")
    with BurstCluster(workers=0, python="~/env/bin/python", progress=False) as cluster:
        exec_line = [line for line in cluster.job_script().splitlines() if line.startswith("exec ")][0]
    assert exec_line.split()[1] == str(lab_site / "home" / "env" / "bin" / "python")


def test_a_mismatched_environment_is_refused_before_anything_starts(lab_site, tmp_path):
    python = make_env(tmp_path / "env")
    fake_install(tmp_path / "env", "toolz", "0.0.1")
    with pytest.raises(WorkerEnvironmentError) as refused:
        BurstCluster(python=str(python), progress=False)
    message = str(refused.value)
    assert "toolz %s here, 0.0.1 on the workers" % importlib.metadata.version("toolz") in message
    assert "nothing was submitted" in message and "daskhpc venv ~/myenv" in message


def test_an_environment_without_dask_is_refused(lab_site, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "plain")], check=True)
    with pytest.raises(WorkerEnvironmentError, match="distributed %s here, missing on the workers"
                       % importlib.metadata.version("distributed")):
        BurstCluster(python=str(tmp_path / "plain" / "bin" / "python"), progress=False)


def test_a_missing_python_is_refused(lab_site, tmp_path):
    with pytest.raises(WorkerEnvironmentError, match="does not exist or is not executable. Fix: "):
        BurstCluster(python=str(tmp_path / "nowhere" / "bin" / "python"), progress=False)


def test_doctor_checks_the_users_environment(tmp_path):
    good = make_env(tmp_path / "good")
    bad = make_env(tmp_path / "bad")
    fake_install(tmp_path / "bad", "cloudpickle", "0.0.1")
    config = {"site": "lab", "partition": "burst", "qos": "burst", "account": "burst", "python": sys.executable}
    passed = Doctor(config=config, user="u", python=str(good)).check_environment()
    assert passed.ok and "matches" in passed.detail
    failed = Doctor(config=config, user="u", python=str(bad)).check_environment()
    assert not failed.ok and "cloudpickle" in failed.detail and "daskhpc venv" in failed.fix
