"""BurstCluster policy, directive refusal and the job script, directive by directive (no batch system needed)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from daskhpc.cluster import BurstCluster, PolicyError, lifetime_args
from daskhpc.config import NotConfigured

REPO = Path(__file__).resolve().parents[2]


def lab_config(**overrides):
    """The daskhpc section exactly as the dask_client role writes it for the lab."""
    from ansible_collections.onprem.daskhpc.plugins.filter.dask_client import dask_client_config

    with open(REPO / "inventories/lab/group_vars/all/site.yml") as handle:
        site = yaml.safe_load(handle)["daskhpc_site"]
    config = dask_client_config(site, tls={"ca": "/nonexistent/ca.pem", "cert": "/nonexistent/u.pem",
                                           "key": "/nonexistent/u.key"}, contact="hpc-help@lab.example")["daskhpc"]
    config["tls"]["mode"] = "optional"
    config["python"] = "/opt/daskhpc/venv/bin/python"
    # The model names the lab hosts' interface (host0); these clusters run on this machine.
    config["interface"] = "lo"
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def cluster():
    with BurstCluster(config=lab_config(), progress=False) as cluster:
        yield cluster


def header(script):
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def command(script):
    lines = [line for line in script.splitlines() if line.startswith("exec ")]
    assert len(lines) == 1, script
    return shlex.split(lines[0])


def test_job_script_directives_one_by_one(cluster):
    script = cluster.job_script()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert header(script) == [
        "#SBATCH -J dask-worker",
        "#SBATCH -p burst",
        "#SBATCH -A burst",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=4",     # workers-per-job (4) x worker-cores (1)
        "#SBATCH --mem=8G",              # 4 x worker-memory 2GiB
        "#SBATCH -t 04:00:00",           # the burst max walltime is the default
        "#SBATCH --qos=burst",
        "#SBATCH --requeue",             # preemption requeues
        "#SBATCH --signal=B:TERM@600",   # SIGTERM to the worker 10 min before walltime
    ]


def test_job_script_worker_command(cluster):
    argv = command(cluster.job_script())
    assert argv[:4] == ["exec", "/opt/daskhpc/venv/bin/python", "-m", "daskhpc.worker"]
    assert argv[4] == cluster.scheduler_address
    opts = dict(zip(argv[5::2], argv[6::2]))
    assert opts["--nworkers"] == "4"
    assert opts["--nthreads"] == "1"
    assert opts["--memory-limit"] == "2.00GiB"
    assert opts["--grace-time"] == "30"
    assert opts["--interface"] == "lo"
    # lifetime + stagger end before walltime minus the --signal margin: 13500 + 300 + 600 = 4 h
    assert opts["--lifetime"] == "13500s" and opts["--lifetime-stagger"] == "300s"


def test_cluster_is_not_started_with_workers(cluster):
    assert cluster.workers == {} and len(cluster.worker_spec) == 0


def test_metrics_dashboard_is_on(cluster):
    assert cluster.dashboard_link.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("directive,field", [
    ("-p prod", "partition"), ("-pprod", "partition"), ("--partition=prod", "partition"),
    ("--partition prod", "partition"), ("--part=prod", "partition"), ("#SBATCH -p prod", "partition"),
    ("-q normal", "QOS"), ("--qos=normal", "QOS"), ("#SBATCH --qos normal", "QOS"),
    ("-A research", "account"), ("--account=research", "account"), ("#SBATCH -A research", "account"),
    ("--clusters=other", "cluster"),
])
def test_directives_that_change_policy_are_refused(directive, field):
    with pytest.raises(PolicyError, match="would change the %s" % field) as err:
        BurstCluster(config=lab_config(), progress=False, job_extra_directives=[directive])
    assert "hpc-help@lab.example" in str(err.value)
    assert "partition burst, QOS burst and account burst" in str(err.value)


def test_sbatch_lines_in_the_prologue_are_refused():
    with pytest.raises(PolicyError, match="job_script_prologue '#SBATCH --qos=normal'"):
        BurstCluster(config=lab_config(), progress=False, job_script_prologue=["#SBATCH --qos=normal"])


def test_harmless_directives_and_prologue_pass():
    with BurstCluster(config=lab_config(), progress=False, job_extra_directives=["--constraint=fast", "-J x"],
                      job_script_prologue=["export OMP_NUM_THREADS=1", "module load foo"]) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --constraint=fast" in script and "export OMP_NUM_THREADS=1" in script


@pytest.mark.parametrize("key,value", [("queue", "prod"), ("account", "research"), ("qos", "normal"),
                                       ("project", "research")])
def test_policy_keywords_are_refused(key, value):
    with pytest.raises(PolicyError, match="%s=%r" % (key, value)):
        BurstCluster(config=lab_config(), progress=False, **{key: value})


def test_skipping_a_policy_directive_is_refused():
    with pytest.raises(PolicyError, match="would drop '#SBATCH -p burst'"):
        BurstCluster(config=lab_config(), progress=False, job_directives_skip=["-p"])


@pytest.mark.parametrize("kwargs,message", [
    ({"walltime": "05:00:00"}, "walltime=05:00:00 is too long: burst jobs may run at most 04:00:00"),
    ({"cores": 12, "processes": 4}, "cores=12 per job is too many: the largest burst node has 8 cores"),
    ({"memory": "40GiB"}, "memory=40.00 GiB per job is too much: the largest burst node has 31.25 GiB"),
])
def test_beyond_policy_job_shapes_fail_at_once(kwargs, message):
    with pytest.raises(PolicyError) as err:
        BurstCluster(config=lab_config(), progress=False, **kwargs)
    assert message in str(err.value)
    assert "lab site's burst policy; ask hpc-help@lab.example" in str(err.value)


def test_overrides_inside_policy_are_honoured():
    with BurstCluster(config=lab_config(), progress=False, cores=2, processes=2, memory="3GiB",
                      walltime="00:30:00") as cluster:
        script = cluster.job_script()
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=3G" in script
    assert "#SBATCH -t 00:30:00" in script and "--nworkers 2" in script


def test_scale_beyond_the_per_user_cores_fails(cluster):
    with pytest.raises(PolicyError, match="20 workers .* at most 16 burst cores .* so at most 16 workers"):
        cluster.scale(20)
    with pytest.raises(PolicyError):
        cluster.scale(cores=17)
    assert len(cluster.worker_spec) == 0  # nothing was requested


def test_adapt_maximum_is_capped_by_policy():
    with BurstCluster(config=lab_config(), progress=False) as cluster:
        with pytest.raises(PolicyError):
            cluster.adapt(minimum=0, maximum=32)
        adaptive = cluster.adapt(minimum=0)
        assert adaptive.maximum == 16
        adaptive.stop()


def test_unconfigured_site_says_how_to_fix():
    with pytest.raises(NotConfigured, match="dask_client role"):
        BurstCluster(config=lab_config(partition=None, site=None), progress=False)


def test_required_tls_without_credential_is_a_clear_error():
    config = lab_config()
    config["tls"] = dict(config["tls"], mode="required")
    with pytest.raises(NotConfigured, match="requires TLS, but your credential is missing"):
        BurstCluster(config=config, progress=False)


def test_lifetime_ends_before_walltime():
    args, margin = lifetime_args(60, 30)
    assert args == ["--lifetime", "3240s", "--lifetime-stagger", "180s"] and margin == 180
    args, margin = lifetime_args(10, 30)  # short jobs keep the grace time plus a minute as margin
    assert margin == 90 and int(args[1][:-1]) + int(args[3][:-1]) + margin <= 600


def test_jupyter_repr_carries_the_progress_line(cluster):
    cluster.progress.update("3/16 workers, 13 jobs pending: Resources")
    html = cluster._repr_html_()
    assert "Burst status:</strong> 3/16 workers, 13 jobs pending: Resources" in html
    assert cluster.status_text() == "3/16 workers, 13 jobs pending: Resources"


def test_site_file_written_by_the_role_is_what_dask_reads(tmp_path, monkeypatch):
    import dask.config

    from ansible_collections.onprem.daskhpc.plugins.filter.dask_client import dask_client_config
    from daskhpc import config as site

    with open(REPO / "inventories/lab/group_vars/all/site.yml") as handle:
        content = dask_client_config(yaml.safe_load(handle)["daskhpc_site"], {"ca": "/ca.pem", "cert": "~/u.pem",
                                                                                "key": "~/u.key"}, "help@x")
    (tmp_path / "daskhpc.yaml").write_text(yaml.safe_dump(content))
    merged = dask.config.collect(paths=[str(tmp_path)])
    defaults = {"daskhpc": site.defaults()}
    cfg = dask.config.merge(defaults, merged)["daskhpc"]
    assert (cfg["partition"], cfg["qos"], cfg["account"], cfg["site"]) == ("burst", "burst", "burst", "lab")
    assert cfg["workers-per-job"] == 4  # package default kept where the site file is silent
    assert site.tls_mode(cfg) == "required"
    assert site.tls_paths(cfg)["cert"] == str(Path("~/u.pem").expanduser())
    assert cfg["limits"] == {"max-cores-per-user": 16, "max-jobs-per-user": 32, "max-cores-burst": 16,
                             "max-cores-per-job": 8, "max-memory-per-job": "32000MiB"}
    assert cfg["contact"] == "help@x"
