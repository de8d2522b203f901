"""Keeping the cluster's view of its jobs in sync with SLURM, on squeue/sacct output recorded in the lab."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from client_helpers import lab_config, python_with_site_file, site_file, wait_for

from daskhpc import scheduler as batch_module
from daskhpc.core import command
from daskhpc.scheduler import ENDED, ENDING, PENDING, RUNNING, STUCK, BatchError
from daskhpc.scheduler.slurm import SlurmBatch, slurm_phase
from daskhpc.cluster.base import MAX_QUICK_FAILURES, BurstCluster, BurstClusterBase
from daskhpc.cluster.slurm import BurstSLURMJob
from daskhpc.cluster.progress import summarize

DATA = Path(__file__).parent / "data" / "daskhpc"


def recorded(name):
    return (DATA / name).read_text()


def test_squeue_parse_running_job():
    state = SlurmBatch().parse_query(recorded("squeue_running.txt"))["9"]
    assert (state.phase, state.state, state.nodes, state.time_limit_s) == (RUNNING, "RUNNING", "n1", 600)
    assert not state.preempting


def test_preemption_is_seen_from_the_end_time_pulled_in():
    states = SlurmBatch().parse_query(recorded("squeue_preempting.txt"))
    assert states["9"].phase == RUNNING and states["9"].preempting
    assert states["10"].phase == PENDING and states["10"].reason == "Resources" and not states["10"].preempting


def test_completing_and_requeued_states():
    assert SlurmBatch().parse_query(recorded("squeue_completing.txt"))["9"].phase == ENDING
    requeued = SlurmBatch().parse_query(recorded("squeue_requeued.txt"))["9"]
    assert (requeued.phase, requeued.reason) == (PENDING, "BeginTime")


def test_sacct_duplicates_keep_the_latest_run():
    states = SlurmBatch().parse_history(recorded("sacct_duplicates.txt"))
    assert states["9"].state == "CANCELLED by 10001" and states["9"].phase == ENDED
    assert states["10"].phase == ENDED


@pytest.mark.parametrize("state,phase", [("PREEMPTED", ENDED), ("TIMEOUT", ENDED), ("NODE_FAIL", ENDED),
                                         ("REQUEUE_HOLD", STUCK), ("SPECIAL_EXIT", STUCK), ("REQUEUED", PENDING),
                                         ("COMPLETING", ENDING), ("CANCELLED+", ENDED)])
def test_phases(state, phase):
    assert slurm_phase(state) == phase


def fake_commands(tmp_path, squeue_out, sacct_out, squeue_rc=0):
    """squeue/sacct stand-ins that record their arguments."""
    log = tmp_path / "calls.log"
    for name, out, rc in (("squeue", squeue_out, squeue_rc), ("sacct", sacct_out, 0)):
        (tmp_path / (name + ".out")).write_text(out)
        script = tmp_path / name
        script.write_text('#!/bin/sh\necho "%s $*" >> %s\n[ %d -ne 0 ] && { echo "slurm_load_jobs error: '
                          'Invalid job id specified" >&2; exit %d; }\ncat %s\n'
                          % (name, log, rc, rc, tmp_path / (name + ".out")))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return SlurmBatch(squeue=str(tmp_path / "squeue"), sacct=str(tmp_path / "sacct")), log


def test_one_squeue_call_per_poll_and_sacct_only_for_missing_jobs(tmp_path):
    batch, log = fake_commands(tmp_path, recorded("squeue_preempting.txt"), "11|TIMEOUT|None|a|b|00:10:00|n2\n")
    states = asyncio.run(batch.query(["9", "10", "11"]))
    calls = log.read_text().splitlines()
    assert len(calls) == 2
    assert calls[0].startswith("squeue ") and "--jobs=9,10,11" in calls[0] and "--states=all" in calls[0]
    assert calls[1].startswith("sacct ") and "--jobs=11" in calls[1]
    assert states["11"].state == "TIMEOUT" and states["9"].preempting


def test_no_sacct_call_when_squeue_knows_every_job(tmp_path):
    batch, log = fake_commands(tmp_path, recorded("squeue_preempting.txt"), "")
    asyncio.run(batch.query(["9", "10"]))
    assert len(log.read_text().splitlines()) == 1


def test_squeue_refusing_purged_ids_falls_back_to_sacct(tmp_path):
    batch, log = fake_commands(tmp_path, "", recorded("sacct_duplicates.txt"), squeue_rc=1)
    states = asyncio.run(batch.query(["9", "10"]))
    assert states["9"].phase == ENDED and [c.split()[0] for c in log.read_text().splitlines()] == ["squeue", "sacct"]


def test_batch_system_down_is_a_batch_error(tmp_path):
    with pytest.raises(BatchError, match="not found"):
        asyncio.run(SlurmBatch(squeue=str(tmp_path / "missing")).query(["1"]))


def test_submission_environment_drops_policy_overrides(monkeypatch):
    # SBATCH_EXPORT used to be kept; now every SBATCH_*/SLURM_* input variable goes (none can change policy).
    monkeypatch.setenv("SBATCH_PARTITION", "prod")
    monkeypatch.setenv("SBATCH_QOS", "normal")
    monkeypatch.setenv("SBATCH_ACCOUNT", "research")
    monkeypatch.setenv("SBATCH_EXPORT", "ALL")
    monkeypatch.setenv("SLURM_CONF", "/tmp/other.conf")
    monkeypatch.setenv("SQUEUE_FORMAT", "%i")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = SlurmBatch().command_environment()
    assert not [key for key in env if key.startswith(("SBATCH_", "SLURM_", "SQUEUE_"))]
    assert env["LANG"] == "C.UTF-8"


def test_every_batch_command_gets_the_clean_environment(tmp_path, monkeypatch):
    log = tmp_path / "env.log"
    script = tmp_path / "squeue"
    script.write_text("#!/bin/sh\nenv >> %s\n" % log)
    script.chmod(0o755)
    monkeypatch.setenv("SLURM_CONF", "/tmp/other.conf")
    monkeypatch.setenv("SQUEUE_STATES", "RUNNING")
    asyncio.run(SlurmBatch(squeue=str(script), sacct="/bin/true").query(["9"]))
    assert "SLURM_CONF" not in log.read_text() and "SQUEUE_STATES" not in log.read_text()


# --- timeouts: a stuck batch command is a clear error, never a hang -------------------------------------


def stuck_command(tmp_path, name):
    """A command that never answers, through a child process (whose open pipes must not keep us waiting)."""
    script = tmp_path / name
    script.write_text("#!/bin/sh\nsleep 300\necho late\n")
    script.chmod(0o755)
    return script


def test_stuck_squeue_times_out_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_module, "COMMAND_TIMEOUT", 1)
    started = time.monotonic()
    with pytest.raises(BatchError, match="gave no answer within 1 s"):
        asyncio.run(SlurmBatch(squeue=str(stuck_command(tmp_path, "squeue"))).query(["9"]))
    assert time.monotonic() - started < 10


def test_stuck_sbatch_and_scancel_time_out(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_module, "COMMAND_TIMEOUT", 1)
    for name in ("sbatch", "scancel"):
        stuck_command(tmp_path, name)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    with site_file(tmp_path / "site", lab_config()), BurstCluster(progress=False) as cluster:
        job = cluster._dummy_job
        script = tmp_path / "job.sh"
        script.write_text(job.job_script())
        started = time.monotonic()
        with pytest.raises(BatchError, match="sbatch .* gave no answer within 1 s"):
            cluster.sync(job._submit_job, str(script))
        cluster.sync(job._close_job, "42", "scancel")  # logged, not raised: closing goes on
        assert time.monotonic() - started < 10


def test_run_sync_times_out(tmp_path):
    started = time.monotonic()
    assert command.run([str(stuck_command(tmp_path, "sinfo"))], timeout=1)[0] == 124
    assert time.monotonic() - started < 10


def test_release_command_lifts_the_requeue_hold():
    assert SlurmBatch().release_command(["9", "12"]) == ["scontrol", "update", "JobId=9,12", "StartTime=now"]


# --- the cluster's decisions ----------------------------------------------------------------


def job(job_id, last_phase=None, ever_ran=False, had_workers=False):
    return SimpleNamespace(job_id=job_id, batch_state=None, last_phase=last_phase, ever_ran=ever_ran,
                           retiring=False, missing_polls=0, had_workers=had_workers)


def fake_cluster(**jobs):
    spec = {name: {"cls": None, "options": {}, "group": ["-0", "-1"]} for name in jobs}
    counter = iter(range(100, 200))
    fake = SimpleNamespace(
        requeues=0, replaced=0, _quick_failures=0, workers=dict(jobs), worker_spec=spec, _futures=set(),
        loop=SimpleNamespace(add_callback=lambda f: None), progress=SimpleNamespace(update=lambda t: None),
        log_directory="/home/u/.daskhpc/logs", _correct_state=None, scheduler_info={"workers": {}},
        start_failure=None, _gave_up=None)
    fake.error_log = lambda job_id: BurstSLURMJob.error_log(fake.log_directory, job_id)
    fake.describe_start_failure = lambda job_id, state: BurstClusterBase.describe_start_failure(fake, job_id, state)
    fake.new_worker_spec = lambda: {"BurstCluster-%d" % next(counter): {"cls": None, "options": {}}}
    fake._job_worker_names = lambda name: BurstClusterBase._job_worker_names(fake, name)
    fake._connected_worker_names = lambda: BurstClusterBase._connected_worker_names(fake)
    fake._note_requeue = lambda job, state: BurstClusterBase._note_requeue(fake, job, state)
    return fake


def classify(fake, text):
    return BurstClusterBase.classify(fake, fake.workers, SlurmBatch().parse_query(text))


def test_preempted_job_workers_are_retired_during_grace_time():
    fake = fake_cluster(a=job("9", last_phase=RUNNING, ever_ran=True))
    replace, retire, release = classify(fake, recorded("squeue_preempting.txt"))
    assert (replace, retire, release) == ([], ["a"], [])
    fake.workers["a"].retiring = True
    assert classify(fake, recorded("squeue_preempting.txt"))[1] == []  # only once


def test_requeued_job_is_counted_and_released_not_replaced():
    fake = fake_cluster(a=job("9", last_phase=RUNNING, ever_ran=True))
    replace, retire, release = classify(fake, recorded("squeue_requeued.txt"))
    assert (replace, retire, release) == ([], [], ["a"])
    assert fake.requeues == 1 and fake.workers["a"].last_phase == PENDING


def test_pbs_job_requeued_and_rerun_between_two_polls_is_counted_once():
    """PBS reruns a requeued job at once when another node has room: R, then R again with run_count + 1."""
    from daskhpc.scheduler.pbs import PbsBatch

    def poll(run_count):
        attrs = {"job_state": "R", "queue": "burst", "run_count": run_count, "Job_Owner": "alice@plogin",
                 "exec_host": "pcn2/0"}
        text = json.dumps({"Jobs": {"9.pbs": attrs}})
        return BurstClusterBase.classify(fake, fake.workers, PbsBatch().parse_query(text))

    fake = fake_cluster(a=job("9"))
    assert poll(1) == ([], [], [])
    assert fake.requeues == 0
    assert poll(1) == ([], [], []) and fake.requeues == 0   # same run: nothing happened
    assert poll(2) == ([], [], []) and fake.requeues == 1   # a second run: requeued in between
    assert poll(2) == ([], [], []) and fake.requeues == 1   # counted once


def test_pending_job_that_never_ran_is_left_alone():
    fake = fake_cluster(b=job("10"))
    assert classify(fake, recorded("squeue_preempting.txt")) == ([], [], [])
    assert fake.workers["b"].batch_state.reason == "Resources"


def test_ended_jobs_are_replaced_to_keep_the_requested_size():
    fake = fake_cluster(a=job("9", last_phase=RUNNING, ever_ran=True, had_workers=True),
                        b=job("10", ever_ran=True, had_workers=True))
    replace, _, _ = BurstClusterBase.classify(fake, fake.workers,
                                              SlurmBatch().parse_history(recorded("sacct_duplicates.txt")))
    assert sorted(replace) == ["a", "b"]
    BurstClusterBase._replace(fake, replace)
    assert set(fake.worker_spec) == {"BurstCluster-100", "BurstCluster-101"} and fake.workers == {}
    assert fake.replaced == 2


def test_job_gone_from_squeue_and_sacct_is_replaced_after_five_polls():
    fake = fake_cluster(a=job("77"))
    for _round in range(4):
        assert classify(fake, "")[0] == []
    assert classify(fake, "")[0] == ["a"]


def test_scaled_down_job_is_not_resubmitted():
    fake = fake_cluster(a=job("9", ever_ran=True))
    del fake.worker_spec["a"]
    BurstClusterBase._replace(fake, ["a"])
    assert fake.worker_spec == {} and fake.replaced == 0


def test_jobs_failing_before_any_worker_started_stop_the_resubmission():
    fake = fake_cluster(**{"j%d" % i: job(str(i)) for i in range(MAX_QUICK_FAILURES + 1)})
    states = {str(i): SlurmBatch().parse_query("%d|FAILED|None|N/A|N/A|10:00|n1" % i)[str(i)]
              for i in range(MAX_QUICK_FAILURES + 1)}
    messages = []
    fake.progress = SimpleNamespace(update=messages.append)
    for j in fake.workers.values():
        j.batch_state = states[j.job_id]
    BurstClusterBase._replace(fake, list(fake.workers))
    assert fake.replaced == MAX_QUICK_FAILURES - 1
    assert messages and "not resubmitting" in messages[-1] and "daskhpc doctor" in messages[-1]


# --- workers whose job is gone stop -------------------------------------------------------------------


def connected(fake, *names):
    fake.scheduler_info = {"workers": {"tcp://10.0.0.%d:1" % i: {"name": name} for i, name in enumerate(names)}}


@pytest.mark.parametrize("recording,ghosts", [
    ("squeue_running.txt", []),                      # running: its workers belong there
    ("squeue_preempting.txt", []),                   # still running during GraceTime (retired separately)
    ("squeue_completing.txt", []),                   # leaving the node: its workers are on their way out
    ("squeue_requeued.txt", ["a-0", "a-1"]),         # requeued, pending again: nothing of it may still run
    ("sacct_duplicates.txt", ["a-0", "a-1"]),        # ended
    ("", ["a-0", "a-1"]),                            # gone from squeue and sacct
])
def test_connected_workers_of_a_job_that_is_not_running_are_ghosts(recording, ghosts):
    fake = fake_cluster(a=job("9", last_phase=RUNNING, ever_ran=True), b=job("10"))
    connected(fake, "a-0", "a-1", "unrelated")
    states = SlurmBatch().parse_query(recorded(recording)) if recording else {}
    BurstClusterBase.classify(fake, fake.workers, states)
    assert sorted(BurstClusterBase.ghost_workers(fake, fake.workers)) == ghosts


def test_ghosts_are_closed_on_the_scheduler_by_one_sync(tmp_path):
    """One squeue call shows job 9 requeued while its worker is still connected: that worker process exits."""
    squeue = tmp_path / "squeue"
    squeue.write_text("#!/bin/sh\ncat %s\n" % (DATA / "squeue_requeued.txt"))
    squeue.chmod(0o755)
    path = tmp_path / "site" / "daskhpc.yaml"
    with site_file(tmp_path / "site", lab_config(interface=None)), \
            BurstCluster(progress=False, security=False, scheduler_options={"host": "127.0.0.1"}) as cluster:
        name = "BurstCluster-ghost"
        cluster.worker_spec[name] = {"cls": None, "options": {}, "group": ["-0"]}
        cluster.workers[name] = SimpleNamespace(job_id="9", batch_state=None, last_phase=RUNNING, ever_ran=True,
                                                retiring=False, missing_polls=0)
        worker = subprocess.Popen(python_with_site_file(path) + [
            "daskhpc.worker", cluster.scheduler_address, "--name", name + "-0", "--nthreads", "1",
            "--memory-limit", "300MB"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert wait_for(lambda: len(cluster.scheduler_info["workers"]) == 1, 60), "the worker never connected"
            cluster.batch = SlurmBatch(squeue=str(squeue), sacct="/bin/true", scontrol="/bin/true")
            cluster.sync(cluster._sync_jobs)
            worker.wait(60)  # the process exits by itself once the scheduler closed it
            assert wait_for(lambda: not cluster.scheduler_info["workers"], 30)
        finally:
            if worker.poll() is None:
                worker.kill()
            cluster.workers.pop(name, None)
            cluster.worker_spec.pop(name, None)
    assert worker.returncode == 0, worker.stdout.read()


# --- progress --------------------------------------------------------------------------------


def test_progress_line_names_the_pending_reason():
    pending = SlurmBatch().parse_query("\n".join("%d|PENDING|Resources|N/A|N/A|10:00|" % i for i in range(8)))
    running = SlurmBatch().parse_query(recorded("squeue_running.txt"))
    text = summarize(8, 16, list(pending.values()) + list(running.values()))
    assert text.startswith("8/16 workers, 8 jobs pending: Resources (waiting for free cores)")
    assert "1 running" in text


def test_progress_line_mixed_reasons_and_preemption():
    text = recorded("squeue_preempting.txt") + "11|PENDING|QOSMaxCpuPerUserLimit|N/A|N/A|10:00|\n"
    states = SlurmBatch().parse_query(text)
    text = summarize(4, 12, list(states.values()) + [None])
    assert "2 jobs pending: Resources (1), QOSMaxCpuPerUserLimit (1)" in text
    assert "your burst core limit is reached" in text
    assert "1 being preempted" in text and "1 submitted" in text


def test_progress_prints_only_changes(capsys):
    from daskhpc.cluster.progress import Progress

    progress = Progress(enabled=True, min_interval=0)
    for text in ("0/4 workers", "0/4 workers", "4/4 workers"):
        progress.update(text)
    assert capsys.readouterr().err.splitlines() == ["[daskhpc] 0/4 workers", "[daskhpc] 4/4 workers"]
    assert "4/4 workers" in progress.html()
