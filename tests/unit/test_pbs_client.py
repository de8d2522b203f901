"""PBS on the client side: qstat/pbsnodes JSON parsers, PbsBatch, PBSBurstCluster job scripts and the
exporter's PBS source, against recorded-format outputs (tests/fixtures/pbs; no PBS server runs here)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from client_helpers import site_file
from prometheus_client import generate_latest

from daskhpc.scheduler import ENDED, PENDING, RUNNING, STUCK
from daskhpc.cluster.base import BurstCluster, PolicyError, cluster_class
from daskhpc.exporter.server import build_registry
from daskhpc.scheduler.pbs import (PbsBatch, exec_hosts, parse_pbsnodes, parse_qstat_dsv, parse_qstat_jobs, pbs_command,
                                   pending_reason)
from daskhpc.cluster.pbs import BurstPBSJob, PBSBurstCluster, refused_pbs_directive
from daskhpc.exporter.pbs import PbsSource

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pbs"


def fixture(name):
    return (FIXTURES / name).read_text()


# --- qstat -f -F json ---------------------------------------------------------------------------------


def test_jobs_states_reasons_and_hosts():
    jobs = parse_qstat_jobs(fixture("qstat_f.json"))
    assert sorted(jobs) == ["101.pbs-head", "102.pbs-head", "103.pbs-head", "104.pbs-head", "105.pbs-head",
                            "106.pbs-head", "107.pbs-head"]
    running = jobs["101.pbs-head"]
    assert (running.state, running.phase, running.user, running.queue) == ("R", RUNNING, "alice", "burst")
    assert running.hosts == ["cn01"] and running.walltime_s == 4 * 3600 and running.start.hour == 9
    assert jobs["106.pbs-head"].hosts == ["cn03", "cn04"] and jobs["106.pbs-head"].ncpus == 2
    pending = jobs["102.pbs-head"]
    assert pending.phase == PENDING and not pending.requeued
    assert pending.reason == "Insufficient amount of resource: ncpus (R: 1 A: 0 T: 1024)"
    assert jobs["103.pbs-head"].requeued  # queued again after having run
    assert jobs["105.pbs-head"].phase == STUCK and jobs["105.pbs-head"].hold_types == "s"
    assert jobs["107.pbs-head"].reason == "User has reached queue burst running job limit."


def test_history_shows_walltime_end():
    jobs = parse_qstat_jobs(fixture("qstat_fx.json"))
    hit = jobs["98.pbs-head"]
    assert hit.phase == ENDED and hit.hit_walltime and hit.reason == "walltime exceeded"
    assert jobs["99.pbs-head"].exit_status == 0 and not jobs["99.pbs-head"].hit_walltime


def test_helpers():
    assert exec_hosts("cn03/0*2+cn04/1+cn03/5") == ["cn03", "cn04"]
    assert exec_hosts("") == []
    assert pending_reason("Can Never Run: Insufficient amount of queue resource: ncpus") == \
        "Insufficient amount of queue resource: ncpus"
    assert parse_qstat_jobs("") == {}


# --- pbsnodes -av -F json ------------------------------------------------------------------------------


def test_nodes_with_zero_assignments_left_out():
    nodes = parse_pbsnodes(fixture("pbsnodes_av.json"))
    assert nodes["cn01"].ncpus == 48 and nodes["cn01"].ncpus_assigned == 1 and nodes["cn01"].jobs == ["101.pbs-head"]
    assert nodes["bm01"].ncpus_assigned == 0 and nodes["bm01"].jobs == []  # "resources_assigned":{ }
    assert nodes["bm02"].states == ["state-unknown", "down"]
    assert nodes["cn05"].comment == "disk replacement, ticket 4711"


# --- PbsBatch ----------------------------------------------------------------------------------------


def test_batch_indexes_full_and_numeric_ids():
    states = PbsBatch().parse_query(fixture("qstat_fx.json"))
    assert states["101"] is states["101.pbs-head"]
    assert states["101"].phase == RUNNING and states["101"].nodes == "cn01"
    assert states["103"].phase == PENDING and states["103"].reason.startswith("Insufficient amount")
    assert states["105"].phase == STUCK
    assert states["98"].phase == ENDED and states["98"].reason == "walltime exceeded"
    assert not states["101"].preempting  # PBS gives no early warning; the worker handles SIGTERM


def as_dsv(json_text):
    """The jobs of a ``-F json`` fixture as ``-F dsv`` prints them (one line per job, resources dotted)."""
    lines = []
    for job_id, attrs in json.loads(json_text)["Jobs"].items():
        fields = ["Job Id: %s" % job_id]
        for key, value in attrs.items():
            if isinstance(value, dict):
                fields += ["%s.%s=%s" % (key, name, item) for name, item in value.items()]
            else:
                fields.append("%s=%s" % (key, str(value).replace("|", "\\|")))
        lines.append("|".join(fields))
    return "\n".join(lines) + "\n"


def test_dsv_and_json_give_the_same_jobs():
    """PbsBatch reads -F dsv (qstat's JSON drops all but the first of several ids); both layouts read alike."""
    text = fixture("qstat_fx.json")
    assert parse_qstat_jobs(as_dsv(text)) == parse_qstat_jobs(text)
    states = PbsBatch().parse_query(as_dsv(text))
    assert states["101"] is states["101.pbs-head"] and states["98"].reason == "walltime exceeded"


def test_dsv_recorded_from_the_live_server():
    """qstat -f -x -F dsv 3 4 99 on the PBS lab (OpenPBS 23.06.06): two finished BurstCluster jobs."""
    jobs = parse_qstat_jobs(fixture("qstat_fx_live.dsv"))
    assert sorted(jobs) == ["3.pbs", "4.pbs"]
    job = jobs["3.pbs"]
    assert (job.state, job.queue, job.user, job.hosts, job.run_count, job.exit_status, job.walltime_s) == \
        ("F", "burst", "alice", ["pcn2"], 1, 0, 14400)
    assert job.rerunable and job.phase == ENDED
    raw = parse_qstat_dsv(fixture("qstat_fx_live.dsv"))["3.pbs"]
    assert raw["Resource_List"]["select"] == "1:ncpus=1:mem=2048MB"   # '=' inside a value kept
    assert raw["Variable_List"].startswith("PBS_O_HOME=/home/alice,")
    escaped = parse_qstat_dsv("Job Id: 1.s|comment=a \\| b|job_state=Q\n")["1.s"]
    assert escaped == {"comment": "a | b", "job_state": "Q"}


def _fake_qstat(tmp_path, stdout_file, rc=0, stderr=""):
    script = tmp_path / "qstat"
    script.write_text("#!/bin/sh\necho \"$@\" > %s/args\ncat %s\necho '%s' >&2\nexit %d\n"
                      % (tmp_path, stdout_file, stderr, rc))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_batch_query_runs_one_qstat_and_tolerates_purged_ids(tmp_path):
    qstat = _fake_qstat(tmp_path, FIXTURES / "qstat_fx.json", rc=153, stderr="qstat: Unknown Job Id 7.pbs-head")
    states = asyncio.run(PbsBatch(qstat=str(qstat)).query(["101", "98", "7"]))
    assert (tmp_path / "args").read_text().split() == ["-f", "-x", "-F", "dsv", "101", "98", "7"]
    assert set(states) == {"101", "98"}


def test_batch_query_reports_a_down_server(tmp_path):
    from daskhpc.scheduler import BatchError

    empty = tmp_path / "empty"
    empty.write_text("")
    qstat = _fake_qstat(tmp_path, empty, rc=2, stderr="Connection refused")
    with pytest.raises(BatchError, match="Connection refused"):
        asyncio.run(PbsBatch(qstat=str(qstat)).query(["101"]))


# --- PBSBurstCluster job scripts -------------------------------------------------------------------------

CONFIG = {"site": "hpc-pbs", "scheduler": "pbs", "partition": "burst", "qos": "burst", "account": "burst",
          "python": sys.executable, "interface": None, "worker-cores": 1,
          "worker-memory": "2GiB", "max-walltime": "04:00:00", "grace-time": 120, "tls": "optional",
          "progress": False, "contact": "hpc-support@example.org",
          "limits": {"max-cores-per-user": 64, "max-jobs-per-user": 64, "max-cores-burst": 256}}


@pytest.fixture
def make_cluster(tmp_path):
    made = []

    def make(**kwargs):
        cluster = PBSBurstCluster(security=False, **kwargs)
        made.append(cluster)
        return cluster

    with site_file(tmp_path, dict(CONFIG)):
        yield make
        for cluster in made:
            cluster.close()


def directives(script):
    return [line for line in script.splitlines() if line.startswith("#PBS")]


def test_job_script_directive_by_directive(make_cluster, tmp_path):
    cluster = make_cluster(cores=2, memory="4GiB", processes=2, walltime="02:00:00")
    script = cluster.job_script()
    logs = tmp_path / "home" / ".daskhpc" / "logs"
    assert directives(script) == [
        "#PBS -N dask-worker",
        "#PBS -q burst",                      # the burst queue, fixed
        "#PBS -A burst",                      # the burst account string, fixed
        "#PBS -l select=1:ncpus=2:mem=4096MB",  # one chunk from cores= and memory=
        "#PBS -l walltime=02:00:00",          # within resources_max.walltime
        "#PBS -r y",                          # rerunnable: preempt_order R requeues it
        "#PBS -o %s/" % logs,                 # the user's private log directory, never the working directory
        "#PBS -e %s/" % logs,
    ]
    command = script.strip().splitlines()[-1]
    assert command.startswith("exec %s -m daskhpc.worker " % sys.executable)
    assert "--grace-time 120" in command and "--nworkers 2" in command and "--lifetime " in command


def test_default_walltime_is_the_policy_maximum(make_cluster):
    assert "#PBS -l walltime=04:00:00" in directives(make_cluster().job_script())


def test_extra_directives_kept_when_harmless(make_cluster):
    script = make_cluster(job_extra_directives=["-m n", "-W sandbox=PRIVATE"]).job_script()
    assert directives(script)[-2:] == ["#PBS -m n", "#PBS -W sandbox=PRIVATE"]


@pytest.mark.parametrize("kwargs, message", [
    ({"queue": "prod"}, r"queue='prod'"),
    ({"account": "research"}, r"account='research'"),
    ({"project": "research"}, r"project='research'"),
    ({"resource_spec": "select=4:ncpus=48"}, r"resource_spec"),
    ({"walltime": "12:00:00"}, r"walltime=12:00:00 is too long.*at most 04:00:00"),
    ({"cores": 128}, r"cores=128 per job is too many"),
    ({"job_extra_directives": ["-q prod"]}, r"'-q prod' would change the queue"),
    ({"job_extra_directives": ["-hq prod"]}, r"would change the queue"),        # bundled after a flag
    ({"job_extra_directives": ["-qprod"]}, r"would change the queue"),
    ({"job_extra_directives": ["-m n -q prod"]}, r"would change the queue"),    # several options in one line
    ({"job_extra_directives": ["-J 1-1000"]}, r"would change the number of jobs"),
    ({"job_extra_directives": ["-o /tmp/shared/"]}, r"would change the log files"),
    ({"job_extra_directives": ["-A research"]}, r"would change the account"),
    ({"job_extra_directives": ["-P research"]}, r"would change the project"),
    ({"job_extra_directives": ["-W group_list=research"]}, r"would change the group"),
    ({"job_extra_directives": ["-r n"]}, r"rerunnable flag"),
    ({"job_extra_directives": ["-l walltime=48:00:00"]}, r"would change the walltime"),
    ({"job_extra_directives": ["-lselect=4:ncpus=48"]}, r"chunk request"),
    ({"job_extra_directives": ["-l preempt_targets=queue=prod"]}, r"preemption targets"),
    ({"job_script_prologue": ["#PBS -q prod"]}, r"would change the queue"),
    ({"job_directives_skip": ["-q"]}, r"would drop '#PBS -q burst'"),
])
def test_policy_is_enforced_before_submission(make_cluster, kwargs, message):
    with pytest.raises(PolicyError, match=message):
        make_cluster(**kwargs)


@pytest.mark.parametrize("setting,value,message", [
    ("resource-spec", "select=4:ncpus=128", None),   # our resource_spec wins: the chunk stays the checked one
    ("header-skip", ["-q"], "lacks '#PBS -q burst'"),
    ("name", "x -q prod", "would change the queue"),
])
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_dask_jobqueue_configuration_cannot_change_the_script(make_cluster, setting, value, message):
    import dask

    with dask.config.set({"jobqueue.pbs." + setting: value}):
        if message:
            with pytest.raises(PolicyError, match=message):
                make_cluster()
            return
        script = make_cluster().job_script()
    assert "#PBS -l select=1:ncpus=4:mem=8192MB" in directives(script) and "128" not in script


def test_qsub_runs_without_pbs_variables(monkeypatch):
    for key, value in (("PBS_DEFAULT", "other-server"), ("PBS_DPREFIX", "#XYZ"), ("PBS_ACCOUNT", "research"),
                       ("PBS_QUEUE", "prod")):
        monkeypatch.setenv(key, value)
    env = PbsBatch().command_environment()
    assert not [key for key in env if key.startswith("PBS_")] and env["PATH"] == os.environ["PATH"]


def test_commands_come_from_pbs_exec_in_pbs_conf(tmp_path):
    """qsub/qstat/qdel by absolute path from /etc/pbs.conf's PBS_EXEC: only login shells have them on PATH."""
    bin_dir = tmp_path / "pbs" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "qsub").write_text("#!/bin/sh\n")
    (bin_dir / "qsub").chmod(0o755)
    conf = tmp_path / "pbs.conf"
    conf.write_text("PBS_SERVER=pbs\nPBS_EXEC=%s\nPBS_HOME=/var/spool/pbs\n" % (tmp_path / "pbs"))
    assert pbs_command("qsub", conf=str(conf)) == str(bin_dir / "qsub")
    assert pbs_command("qdel", conf=str(conf)) == "qdel"            # not installed there: PATH decides
    assert pbs_command("qsub", conf=str(tmp_path / "none")) == "qsub"  # no pbs.conf: PATH decides


def test_refused_directive_parser():
    assert refused_pbs_directive("#PBS -l mem=4gb,walltime=1:00:00") == "walltime (use walltime=)"
    assert refused_pbs_directive("#PBS -m abe") is None
    assert refused_pbs_directive("#SBATCH -p prod") is None
    assert refused_pbs_directive("-Wgroup_list=x") == "group (accounting and ACL)"


def test_burst_cluster_picks_pbs_from_site_config(tmp_path):
    assert cluster_class("pbs") is PBSBurstCluster
    with site_file(tmp_path, dict(CONFIG)):
        cluster = BurstCluster(security=False)
        try:
            assert isinstance(cluster, BurstCluster) and cluster.job_cls is BurstPBSJob
            assert "#PBS -q burst" in directives(cluster.job_script())
        finally:
            cluster.close()


def test_scale_beyond_policy_refused(make_cluster):
    cluster = make_cluster()
    with pytest.raises(PolicyError, match="too many"):
        cluster.scale(65)


# --- exporter source -----------------------------------------------------------------------------------


class RecordedCommands:
    def __init__(self, outputs):
        self.outputs = outputs
        self.calls = []

    def __call__(self, argv):
        key = " ".join([os.path.basename(argv[0])] + argv[1:])
        self.calls.append(key)
        return self.outputs[key]


EXPORTER_CONFIG = {"site": "hpc-pbs", "scheduler": "pbs", "burst_partitions": ["burst"],
                   "production_partitions": ["prod", "bigmem"], "burst_max_share_ratio": 0.25,
                   "burst_max_cores": 256, "min_interval_seconds": 0, "slow_interval_seconds": 0}


def recorded(jobs="qstat_f.json"):
    return RecordedCommands({"qstat -f -F json": fixture(jobs), "pbsnodes -av -F json": fixture("pbsnodes_av.json"),
                             "qstat -Qf -F json": fixture("qstat_Qf.json")})


def test_source_reads_state_in_three_calls():
    runner = recorded()
    state = PbsSource(EXPORTER_CONFIG, runner=runner).read_state()
    assert runner.calls == ["qstat -f -F json", "pbsnodes -av -F json", "qstat -Qf -F json"]
    nodes = {n.name: n for n in state.nodes}
    assert {name: n.state for name, n in nodes.items()} == {
        "cn01": "mixed", "cn02": "allocated", "cn03": "mixed", "cn04": "mixed", "cn05": "drained",
        "cn06": "down", "bm01": "idle", "bm02": "down"}
    assert (nodes["cn01"].cpus_allocated, nodes["cn01"].cpus_idle, nodes["cn01"].cpus_other) == (1, 47, 0)
    assert (nodes["cn06"].cpus_idle, nodes["cn06"].cpus_other) == (0, 48)
    assert nodes["cn06"].unavailable_since == 1717990000 and nodes["cn01"].unavailable_since is None
    assert nodes["cn01"].partitions == ["prod", "bigmem", "burst"]  # no node-queue association: every queue
    reasons = sorted(j.reason for j in state.jobs if j.state == "pending")
    assert reasons == ["JobHeldAdmin", "QOSMaxJobsPerUserLimit", "Resources", "Resources"]
    assert state.partitions_up == {"workq": True, "prod": True, "bigmem": True, "burst": True}


def test_source_counts_a_requeue_once():
    data = json.loads(fixture("qstat_f.json"))
    data["Jobs"]["103.pbs-head"].update(job_state="R", exec_host="cn05/0")  # running on the earlier read
    before = json.dumps(data)
    clock = iter([100.0, 200.0, 300.0])
    source = PbsSource(EXPORTER_CONFIG, runner=None, clock=lambda: next(clock))
    source.runner = RecordedCommands({"qstat -f -F json": before, "pbsnodes -av -F json": fixture("pbsnodes_av.json"),
                                      "qstat -Qf -F json": fixture("qstat_Qf.json")})
    source.read_state()
    source.runner = recorded()
    source.read_state()
    source.read_state()
    events = source.read_preemptions(0, 1000)
    assert [(e.job_id, e.partition, e.user, e.time) for e in events] == [("103.pbs-head", "burst", "alice", 200.0)]


def test_exporter_serves_the_shared_metric_names():
    registry = build_registry(EXPORTER_CONFIG, source=PbsSource(EXPORTER_CONFIG, runner=recorded()))
    text = generate_latest(registry).decode()
    assert "daskhpc_up 1.0" in text
    assert 'daskhpc_jobs{partition="burst",state="running"} 2.0' in text
    assert 'daskhpc_jobs_pending{partition="burst",reason="Resources"} 2.0' in text
    assert 'daskhpc_burst_cores{user="bob"} 2.0' in text
    assert 'daskhpc_partition_nodes{partition="burst",state="down"} 2.0' in text


def test_exporter_keeps_serving_when_pbs_is_down():
    def down(argv):
        from daskhpc.scheduler import BatchError

        raise BatchError("qstat: cannot connect to server pbs-head (errno=15010)")

    registry = build_registry(EXPORTER_CONFIG, source=PbsSource(EXPORTER_CONFIG, runner=down))
    text = generate_latest(registry).decode()
    assert "daskhpc_up 0.0" in text


@pytest.mark.parametrize(("comment", "reason"), [
    # comments a live OpenPBS 23.06.06 scheduler wrote (docs/pbs.md, "Verified live")
    ("Not Running: Not enough free nodes available", "Resources"),
    ("Not Running: would exceed overall limit on resource ncpus in queue", "QOSGrpCpuLimit"),
    ("Not Running: Queue burst per-user limit reached on resource ncpus", "QOSMaxCpuPerUserLimit"),
    ("Not Running: Insufficient amount of resource: ncpus (R: 1 A: 0 T: 1024)", "Resources"),
])
def test_reason_labels_of_live_scheduler_comments(comment, reason):
    from daskhpc.scheduler.pbs import PbsJob, reason_label

    assert reason_label(PbsJob("1.pbs", "dask-worker", "alice", "Q", "burst", comment=comment)) == reason
