"""BurstCluster policy, directive refusal and the job script, directive by directive (no batch system needed).

The site file is written to a temporary place and ``daskhpc.config.SITE_FILE`` pointed at it, as the
dask_client role writes /etc/dask/daskhpc.yaml.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from pathlib import Path

import dask.config
import pytest
import yaml
from client_helpers import REPO, lab_config, site_file, wait_for
from distributed import Security

from daskhpc import config as site
from daskhpc.cluster.base import BurstCluster, LogDirectoryError, PolicyError, lifetime_args, private_log_directory
from daskhpc.config import NotConfigured
from daskhpc.security import IdentitySecurity


@pytest.fixture(scope="module")
def lab_site(tmp_path_factory):
    """The lab's site file (TLS optional, no credential) for every test of this module."""
    directory = tmp_path_factory.mktemp("lab-site")
    with site_file(directory, lab_config()) as path:
        yield Path(path).parent


@pytest.fixture(scope="module")
def cluster(lab_site):
    with BurstCluster(progress=False) as cluster:
        yield cluster


def header(script):
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def command(script):
    lines = [line for line in script.splitlines() if line.startswith("exec ")]
    assert len(lines) == 1, script
    return shlex.split(lines[0])


def test_job_script_directives_one_by_one(cluster, lab_site):
    script = cluster.job_script()
    logs = lab_site / "home" / ".daskhpc" / "logs"
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
        "#SBATCH --output=%s/dask-worker-%%j.out" % logs,  # the user's private log directory, never the cwd
        "#SBATCH --error=%s/dask-worker-%%j.err" % logs,
    ]


def test_job_script_worker_command(cluster):
    argv = command(cluster.job_script())
    assert argv[:4] == ["exec", sys.executable, "-m", "daskhpc.worker"]
    assert argv[4] == cluster.scheduler_address
    opts = dict(zip(argv[5::2], argv[6::2]))
    assert opts["--nworkers"] == "4"
    assert opts["--nthreads"] == "1"
    assert opts["--memory-limit"] == "2.00GiB"
    assert opts["--grace-time"] == "30"
    assert opts["--interface"] == "lo"
    # lifetime + stagger end before the earliest --signal (margin, plus SLURM's minute): 13440 + 300 + 60 + 600 = 4 h
    assert opts["--lifetime"] == "13440s" and opts["--lifetime-stagger"] == "300s"


def test_cluster_is_not_started_with_workers(cluster):
    assert cluster.workers == {} and len(cluster.worker_spec) == 0


def test_metrics_dashboard_is_on(cluster):
    assert cluster.dashboard_link.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("directive,field", [
    ("-p prod", "partition"), ("-pprod", "partition"), ("--partition=prod", "partition"),
    ("--partition prod", "partition"), ("--part=prod", "partition"), ("#SBATCH -p prod", "partition"),
    ("-Hp prod", "partition"), ("-vHpprod", "partition"),          # bundled short options
    ("--constraint=fast --partition prod", "partition"),           # one directive string, several options
    ("#SBATCH --comment=x --partition=prod", "partition"),
    ("-q normal", "QOS"), ("-qnormal", "QOS"), ("--qos=normal", "QOS"), ("--qo=normal", "QOS"),
    ("#SBATCH --qos normal", "QOS"),
    ("-A research", "account"), ("-Aresearch", "account"), ("--account=research", "account"),
    ("#SBATCH -A research", "account"), ("--acco research", "account"),
    ("--clusters=other", "cluster"), ("-M other", "cluster"), ("--reservation=prod_maint", "reservation"),
    ("-c 32", "cores"), ("--cpus-per-task=32", "cores"), ("--exclusive", "cores"), ("-N 4", "cores"),
    ("--mem=500G", "memory"), ("--mem-per-cpu=64G", "memory"), ("-t 48:00:00", "walltime"),
    ("--time=2-00:00:00", "walltime"), ("--array=0-999", "number of jobs"),
    ("-o /tmp/shared.out", "log files"), ("--error=/tmp/shared.err", "log files"),
])
def test_directives_that_change_policy_are_refused(lab_site, directive, field):
    with pytest.raises(PolicyError, match="would change the %s" % field) as err:
        BurstCluster(progress=False, job_extra_directives=[directive])
    assert "hpc-help@lab.example" in str(err.value)
    assert "partition burst, QOS burst and account burst" in str(err.value)
    assert "burst policy" in str(err.value)


def test_sbatch_lines_in_the_prologue_are_refused(lab_site):
    with pytest.raises(PolicyError, match="job_script_prologue '#SBATCH --qos=normal'"):
        BurstCluster(progress=False, job_script_prologue=["#SBATCH --qos=normal"])


def test_harmless_directives_and_prologue_pass(lab_site):
    with BurstCluster(progress=False, job_extra_directives=["--constraint=fast", "-J x", "--comment=pass -x"],
                      job_script_prologue=["export OMP_NUM_THREADS=1", "module load foo"]) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --constraint=fast" in script and "export OMP_NUM_THREADS=1" in script


@pytest.mark.parametrize("key,value", [("queue", "prod"), ("account", "research"), ("qos", "normal"),
                                       ("project", "research")])
def test_policy_keywords_are_refused(lab_site, key, value):
    with pytest.raises(PolicyError, match="%s=%r" % (key, value)):
        BurstCluster(progress=False, **{key: value})


@pytest.mark.parametrize("key,value", [("job_cpu", 64), ("job_mem", "500G"), ("header_skip", ["-p"]),
                                       ("env_extra", ["#SBATCH -p prod"]), ("job_extra", ["-p prod"])])
def test_dask_jobqueue_keywords_that_bypass_the_checks_are_refused(lab_site, key, value):
    with pytest.raises(PolicyError, match="%s=" % key):
        BurstCluster(progress=False, **{key: value})


@pytest.mark.parametrize("skip", ["-p", "-A", "--mem", "-t", "--cpus"])
def test_skipping_a_policy_directive_is_refused(lab_site, skip):
    with pytest.raises(PolicyError, match="job_directives_skip %r would drop '#SBATCH " % skip):
        BurstCluster(progress=False, job_directives_skip=[skip])


@pytest.mark.parametrize("setting,value,message", [
    # dask-jobqueue reads its own section of the user's Dask configuration; none of it may change policy.
    ("header-skip", ["-p"], "lacks '#SBATCH -p burst'"),
    ("job-directives-skip", ["-A"], None),  # our argument ([]) wins over this one: nothing is dropped
    ("shebang", "#!/usr/bin/env bash\n#SBATCH -p prod", "would change the partition"),
    ("name", "x --qos=normal", "would change the QOS"),
    ("env-extra", ["#SBATCH -A research"], "would change the account"),
    ("log-directory", "/tmp", "would change the log files"),
    ("job-cpu", 64, None), ("job-mem", "500G", None), ("queue", "prod", None), ("account", "research", None),
])
@pytest.mark.filterwarnings("ignore::FutureWarning")  # dask-jobqueue's warnings about its old setting names
def test_dask_jobqueue_configuration_cannot_change_the_script(lab_site, setting, value, message):
    with dask.config.set({"jobqueue.slurm." + setting: value}):
        if message:
            with pytest.raises(PolicyError, match=message):
                BurstCluster(progress=False)
            return
        with BurstCluster(progress=False) as cluster:
            script = cluster.job_script()
    for line in ("#SBATCH -p burst", "#SBATCH -A burst", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G"):
        assert line in header(script)
    assert "prod" not in script and "research" not in script and "500G" not in script


def test_a_script_changed_after_the_checks_is_not_submitted(cluster, tmp_path, monkeypatch):
    """The file handed to sbatch is checked again: a script edited behind the cluster's back never goes out."""
    sbatch = fake_command(tmp_path, "sbatch", 'echo "$@" >> %s/sbatch.calls; echo "Submitted batch job 42"' % tmp_path)
    monkeypatch.setenv("PATH", "%s:%s" % (sbatch.parent, os.environ["PATH"]))
    job = cluster._dummy_job
    script = tmp_path / "job.sh"
    script.write_text(job.job_script().replace("#SBATCH -p burst", "#SBATCH -p prod"))
    with pytest.raises(PolicyError, match="lacks '#SBATCH -p burst'"):
        cluster.sync(job._submit_job, str(script))
    script.write_text(job.job_script().replace("#SBATCH --requeue", "#SBATCH --requeue\n#SBATCH --part=prod"))
    with pytest.raises(PolicyError, match="would change the partition"):
        cluster.sync(job._submit_job, str(script))
    assert not (tmp_path / "sbatch.calls").exists()
    script.write_text(job.job_script())
    assert "42" in cluster.sync(job._submit_job, str(script))  # the untouched script does go out


def fake_command(directory, name, body):
    """An executable ``directory/name`` running the shell ``body``."""
    path = Path(directory) / name
    path.write_text("#!/bin/sh\n%s\n" % body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_submission_environment_cannot_change_policy(lab_site, tmp_path, monkeypatch):
    """sbatch reads SBATCH_*/SLURM_* input variables above #SBATCH lines: the cluster submits without them."""
    record = tmp_path / "record"
    record.mkdir()
    fake_command(tmp_path, "sbatch", 'echo "$@" > %s/argv; env > %s/env; cp "$1" %s/script; '
                                     'echo "Submitted batch job 42"' % (record, record, record))
    fake_command(tmp_path, "scancel", 'echo "$@" >> %s/scancel' % record)
    fake_command(tmp_path, "squeue", "exit 0")
    fake_command(tmp_path, "sacct", "exit 0")
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    hostile = {"SBATCH_PARTITION": "prod", "SBATCH_QOS": "normal", "SBATCH_ACCOUNT": "research",
               "SBATCH_RESERVATION": "maint", "SBATCH_TIMELIMIT": "2-00:00:00", "SLURM_CLUSTERS": "other",
               "SLURM_CONF": "/tmp/other-slurm.conf", "SBATCH_EXPORT": "NONE", "SLURM_ACCOUNT": "research"}
    for key, value in hostile.items():
        monkeypatch.setenv(key, value)
    with BurstCluster(progress=False) as cluster:
        cluster.scale(4)
        assert wait_for(lambda: (record / "script").exists() and (record / "env").exists())
    argv = (record / "argv").read_text().split()
    assert len(argv) == 1 and argv[0].endswith(".sh")  # nothing on the command line but the script
    env = dict(line.split("=", 1) for line in (record / "env").read_text().splitlines() if "=" in line)
    assert not [key for key in env if key.startswith(("SBATCH_", "SLURM_"))], sorted(env)
    assert env["PATH"] == os.environ["PATH"]  # everything else is kept
    assert "#SBATCH -p burst" in (record / "script").read_text()
    assert wait_for((record / "scancel").exists) and "42" in (record / "scancel").read_text()


@pytest.mark.parametrize("kwargs,message", [
    ({"walltime": "05:00:00"}, "walltime=05:00:00 is too long: burst jobs may run at most 04:00:00"),
    ({"cores": 12, "processes": 4}, "cores=12 per job is too many: the largest burst node has 8 cores"),
    ({"memory": "40GiB"}, "memory=40.00 GiB per job is too much: the largest burst node has 31.25 GiB"),
])
def test_beyond_policy_job_shapes_fail_at_once(lab_site, kwargs, message):
    with pytest.raises(PolicyError) as err:
        BurstCluster(progress=False, **kwargs)
    assert message in str(err.value)
    assert "lab site's burst policy; ask hpc-help@lab.example" in str(err.value)


def test_overrides_inside_policy_are_honoured(lab_site):
    with BurstCluster(progress=False, cores=2, processes=2, memory="3GiB", walltime="00:30:00") as cluster:
        script = cluster.job_script()
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=3G" in script
    assert "#SBATCH -t 00:30:00" in script and "--nworkers 2" in script


def test_scale_beyond_the_per_user_cores_fails(cluster):
    with pytest.raises(PolicyError, match="20 workers .* at most 16 burst cores .* so at most 16 workers"):
        cluster.scale(20)
    with pytest.raises(PolicyError):
        cluster.scale(cores=17)
    assert len(cluster.worker_spec) == 0  # nothing was requested


def test_adapt_maximum_is_capped_by_policy(lab_site):
    with BurstCluster(progress=False) as cluster:
        with pytest.raises(PolicyError):
            cluster.adapt(minimum=0, maximum=32)
        adaptive = cluster.adapt(minimum=0)
        assert adaptive.maximum == 16
        adaptive.stop()


def test_unconfigured_site_says_how_to_fix(tmp_path):
    with site_file(tmp_path, lab_config(partition=None, site=None)), \
            pytest.raises(NotConfigured, match="dask_client role"):
        BurstCluster(progress=False)


def test_no_site_file_is_not_configured(tmp_path):
    with site_file(tmp_path, {}) as path:
        os.unlink(path)
        with pytest.raises(NotConfigured, match="missing site, partition, qos, account"):
            BurstCluster(progress=False)


# --- the policy comes from the site file only --------------------------------------------------------


HOSTILE_USER_CONFIG = {"daskhpc": {
    "partition": "prod", "qos": "normal", "account": "research", "site": "mine", "scheduler": "pbs",
    "tls": {"mode": "optional", "ca": "/tmp/my-ca.pem"}, "limits": {"max-cores-per-user": 10000},
    "max-walltime": "99:00:00", "grace-time": 0, "allowed-groups": ["everyone"], "python": "/tmp/python",
    "metrics-targets-dir": "/tmp/targets", "contact": "me",
}}


def test_users_dask_config_files_and_environment_cannot_change_policy(tmp_path, monkeypatch):
    role_content = lab_config()
    role_content["tls"]["mode"] = "required"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "daskhpc.yaml").write_text(yaml.safe_dump(HOSTILE_USER_CONFIG))
    with site_file(tmp_path / "site", role_content):
        expected = site.policy()
        monkeypatch.setenv("DASK_CONFIG", str(mine))        # a user's own config directory
        monkeypatch.setenv("DASK_ROOT_CONFIG", str(mine))   # ... even standing in for /etc/dask
        monkeypatch.setenv("DASK_DASKHPC__PARTITION", "prod")
        monkeypatch.setenv("DASK_DASKHPC__TLS__MODE", "optional")
        monkeypatch.setenv("DASK_DASKHPC__MAX_WALLTIME", "99:00:00")
        dask.config.refresh()
        try:
            assert dask.config.get("daskhpc.partition") == "prod"  # Dask did read them...
            with dask.config.set(HOSTILE_USER_CONFIG):
                config = site.site_config()                      # ...and the client ignores them
                assert {key: config[key] for key in site.POLICY_KEYS} == expected
                assert (config["partition"], config["qos"], config["account"]) == ("burst", "burst", "burst")
                assert site.tls_mode(config) == "required" and config["max-walltime"] == "04:00:00"
                with pytest.raises(PolicyError, match="requires TLS bound to your identity") as err:
                    BurstCluster(progress=False, security=False)
                assert "ask hpc-help@lab.example" in str(err.value)
        finally:
            monkeypatch.undo()
            dask.config.refresh()


def test_user_preferences_still_come_from_dask_config(lab_site):
    with dask.config.set({"daskhpc.walltime": "01:00:00", "daskhpc.workers-per-job": 2}):
        with BurstCluster(progress=False) as cluster:
            script = cluster.job_script()
        assert "#SBATCH -t 01:00:00" in script and "--nworkers 2" in script
    with dask.config.set({"daskhpc.walltime": "09:00:00"}), pytest.raises(PolicyError, match="too long"):
        BurstCluster(progress=False)  # ... within policy


def test_site_file_path_is_not_configurable():
    source = (REPO / "daskhpc" / "config.py").read_text()
    assert 'SITE_FILE = "/etc/dask/daskhpc.yaml"' in source
    assert "environ" not in source.split("def read_site_file")[1].split("def policy")[0]


@pytest.mark.parametrize("damage,message", [
    ("group-writable", "writable only by it"),
    ("symlink", "not a symbolic link"),
    ("other owner", "owned by uid"),
    ("not a mapping", "no 'daskhpc' mapping"),
])
def test_an_unsafe_site_file_is_refused(tmp_path, damage, message):
    with site_file(tmp_path, lab_config()) as path:
        if damage == "group-writable":
            os.chmod(path, 0o664)
        elif damage == "symlink":
            os.rename(path, path + ".real")
            os.symlink(path + ".real", path)
        elif damage == "other owner":
            if os.geteuid() != 0:
                pytest.skip("needs root to give the file away")
            os.chown(path, 12345, -1)
        else:
            Path(path).write_text("- just a list\n")
        with pytest.raises(NotConfigured, match=message):
            BurstCluster(progress=False)


def test_package_defaults_are_the_site_models_and_not_permissive():
    from daskhpc.core.site_model import BURST_DEFAULTS, DASK_DEFAULTS

    defaults = site.defaults()
    assert defaults["tls"]["mode"] == "required" == DASK_DEFAULTS["tls"]
    assert defaults["max-walltime"] == BURST_DEFAULTS["max_walltime"]
    assert defaults["grace-time"] == BURST_DEFAULTS["grace_time"]
    assert defaults["python"] == DASK_DEFAULTS["python"]
    assert defaults["limits"]["max-cores-per-user"] == BURST_DEFAULTS["per_user"]["max_cores"]
    assert defaults["limits"]["max-jobs-per-user"] == BURST_DEFAULTS["per_user"]["max_jobs"]
    assert (defaults["partition"], defaults["qos"], defaults["account"]) == (None, None, None)


def test_a_site_file_silent_about_tls_requires_it(tmp_path):
    for tls in (None, {}, {"mode": "Optional"}, "requried"):
        config = {"site": "x", "partition": "burst", "qos": "burst", "account": "burst"}
        if tls is not None:
            config["tls"] = tls
        with site_file(tmp_path, config):
            assert site.tls_mode() == "required", tls


def test_site_file_written_by_the_role_is_what_the_client_reads(tmp_path):
    from ansible_collections.onprem.daskhpc.plugins.filter.dask_client import dask_client_config

    with open(REPO / "inventories/lab/group_vars/all/site.yml") as handle:
        content = dask_client_config(yaml.safe_load(handle)["daskhpc_site"], {"ca": "/ca.pem", "cert": "~/u.pem",
                                                                              "key": "~/u.key"}, "help@x")
    with site_file(tmp_path, content["daskhpc"]):
        cfg = site.site_config()
    assert (cfg["partition"], cfg["qos"], cfg["account"], cfg["site"]) == ("burst", "burst", "burst", "lab")
    assert cfg["workers-per-job"] == 4  # package default kept where the site file is silent
    assert site.tls_mode(cfg) == "required"
    assert site.tls_paths(cfg)["cert"] == str(Path("~/u.pem").expanduser())
    assert site.tls_paths(cfg)["crl"] == "/etc/daskhpc/tls/crl.pem"  # package default
    assert cfg["limits"] == {"max-cores-per-user": 16, "max-jobs-per-user": 32, "max-cores-burst": 16,
                             "max-cores-per-job": 8, "max-memory-per-job": "32000MiB"}
    assert cfg["contact"] == "help@x"


# --- TLS: fail closed where the site requires it --------------------------------------------------------


@pytest.fixture
def tls_required_site(tmp_path):
    with site_file(tmp_path, lab_config(tls={"mode": "required", "ca": "/nonexistent/ca.pem",
                                             "cert": "/nonexistent/u.pem", "key": "/nonexistent/u.key"})):
        yield


@pytest.mark.parametrize("kwargs,words", [
    ({"security": False}, "turns TLS off"),
    ({"security": True}, "is not the site's identity-bound TLS"),  # throw-away CA: chain-only
    ({"security": Security()}, "is not the site's identity-bound TLS"),
    ({"security": Security(require_encryption=True, tls_ca_file="/etc/ssl/certs/ca-certificates.crt",
                           tls_client_cert="/x.pem", tls_scheduler_cert="/x.pem")}, "identity-bound TLS"),
    ({"security": IdentitySecurity(owner="somebody-else", require_encryption=True, tls_ca_file="/ca.pem",
                                   tls_client_cert="/x.pem", tls_scheduler_cert="/x.pem")}, "identity-bound"),
    ({"scheduler_options": {"security": None}}, "scheduler_options\\['security'\\]"),
    ({"scheduler_options": {"protocol": "tcp://"}}, "scheduler_options\\['protocol'\\]"),
    ({"protocol": "tcp://"}, "protocol='tcp://'"),
])
def test_plaintext_or_chain_only_tls_is_refused_where_tls_is_required(tls_required_site, kwargs, words):
    with pytest.raises(PolicyError, match=words) as err:
        BurstCluster(progress=False, **kwargs)
    assert "Fix:" in str(err.value)


def test_security_false_names_the_reason_and_the_fix(tls_required_site):
    with pytest.raises(PolicyError) as err:
        BurstCluster(progress=False, security=False)
    text = str(err.value)
    assert "requires TLS bound to your identity" in text and "run code as you" in text
    assert "Fix: leave security out" in text and "hpc-help@lab.example" in text


def test_security_false_is_allowed_where_tls_is_optional(lab_site):
    with BurstCluster(progress=False, security=False) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")


def test_required_tls_without_credential_is_a_clear_error(tls_required_site):
    with pytest.raises(NotConfigured, match="requires TLS, but your credential is missing"):
        BurstCluster(progress=False)


def test_no_same_package_import_fallbacks():
    """A missing daskhpc module must fail, not quietly downgrade (e.g. to no TLS or chain-only TLS)."""
    for name in ("cluster/base.py", "worker.py", "cluster/pbs.py", "doctor.py", "config.py"):
        assert "except ImportError" not in (REPO / "daskhpc" / name).read_text(), name


# --- job logs -------------------------------------------------------------------------------------------


def test_logs_go_to_a_private_directory_of_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = private_log_directory(None)
    assert path == str(tmp_path / ".daskhpc" / "logs")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert private_log_directory(path) == path  # a second time is fine


@pytest.mark.parametrize("damage,message", [
    ("symlink", "is a symbolic link"), ("file", "not a directory"), ("open", "open to others .* chmod 700"),
    ("other owner", "belongs to uid 12345, not to you"), ("relative", "must be an absolute path"),
])
def test_an_unsafe_log_directory_is_refused(tmp_path, damage, message):
    path = tmp_path / "logs"
    if damage == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "elsewhere")
    elif damage == "file":
        path.write_text("")
    elif damage == "open":
        path.mkdir()
        path.chmod(0o755)
    elif damage == "other owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory away")
        path.mkdir(mode=0o700)
        os.chown(path, 12345, -1)
    else:
        path = "logs"
    with pytest.raises(LogDirectoryError, match=message):
        private_log_directory(str(path))


def test_an_unsafe_log_directory_stops_the_cluster(lab_site, tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "logs").symlink_to(tmp_path / "target")
    with pytest.raises(LogDirectoryError, match="symbolic link"):
        BurstCluster(progress=False, log_directory=str(tmp_path / "logs"))


# --- the rest -------------------------------------------------------------------------------------------


def test_lifetime_ends_before_walltime():
    args, margin = lifetime_args(60, 30)
    assert args == ["--lifetime", "3180s", "--lifetime-stagger", "180s"] and margin == 180
    args, margin = lifetime_args(10, 30)  # short jobs keep the grace time plus a minute as margin
    assert margin == 90 and int(args[1][:-1]) + int(args[3][:-1]) + margin <= 600


@pytest.mark.parametrize("minutes", [4, 10, 30, 60, 240, 1440])
def test_the_last_worker_retires_before_slurms_earliest_signal(minutes):
    """sbatch(1): --signal "may be sent up to 60 seconds earlier than specified". Lifetime must win that race,
    or the whole job is signalled at once and the stagger is lost (the CI of stop 21 saw it at 3 minutes)."""
    args, margin = lifetime_args(minutes, 30)
    last_retirement = int(args[1][:-1]) + int(args[3][:-1])
    assert last_retirement <= minutes * 60 - margin - 60


def test_a_replacement_job_never_takes_the_name_of_the_job_it_replaces(cluster):
    """SpecCluster reuses a freed name; the replacement must not (one name, one job; a leaving worker holds it)."""
    seen = set()
    for _round in range(3):
        spec = cluster.new_worker_spec()
        (name,) = spec
        assert name not in seen
        seen.add(name)
        cluster.worker_spec.update(spec)
        del cluster.worker_spec[name]  # the job ended and was forgotten, as _replace does


def test_jupyter_repr_carries_the_progress_line(cluster):
    cluster.progress.update("3/16 workers, 13 jobs pending: Resources")
    html = cluster._repr_html_()
    assert "Burst status:</strong> 3/16 workers, 13 jobs pending: Resources" in html
    assert cluster.status_text() == "3/16 workers, 13 jobs pending: Resources"
