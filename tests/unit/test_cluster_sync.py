"""Keeping the cluster's view of its jobs in sync with SLURM, on squeue/sacct output recorded in the lab."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from daskhpc.batch import ENDED, ENDING, PENDING, RUNNING, STUCK, BatchError, SlurmBatch, slurm_phase
from daskhpc.cluster import MAX_QUICK_FAILURES, BurstClusterBase
from daskhpc.progress import summarize

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
    monkeypatch.setenv("SBATCH_PARTITION", "prod")
    monkeypatch.setenv("SBATCH_QOS", "normal")
    monkeypatch.setenv("SBATCH_ACCOUNT", "research")
    monkeypatch.setenv("SBATCH_EXPORT", "ALL")
    env = SlurmBatch().submit_environment()
    assert "SBATCH_PARTITION" not in env and "SBATCH_QOS" not in env and "SBATCH_ACCOUNT" not in env
    assert env["SBATCH_EXPORT"] == "ALL"


def test_release_command_lifts_the_requeue_hold():
    assert SlurmBatch().release_command(["9", "12"]) == ["scontrol", "update", "JobId=9,12", "StartTime=now"]


# --- the cluster's decisions ----------------------------------------------------------------


def job(job_id, last_phase=None, ever_ran=False):
    return SimpleNamespace(job_id=job_id, batch_state=None, last_phase=last_phase, ever_ran=ever_ran,
                           retiring=False, missing_polls=0)


def fake_cluster(**jobs):
    spec = {name: {"cls": None, "options": {}, "group": ["-0", "-1"]} for name in jobs}
    counter = iter(range(100, 200))
    fake = SimpleNamespace(
        requeues=0, replaced=0, _quick_failures=0, workers=dict(jobs), worker_spec=spec, _futures=set(),
        loop=SimpleNamespace(add_callback=lambda f: None), progress=SimpleNamespace(update=lambda t: None),
        _dummy_job=SimpleNamespace(log_directory=None), _correct_state=None)
    fake.new_worker_spec = lambda: {"BurstCluster-%d" % next(counter): {"cls": None, "options": {}}}
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


def test_pending_job_that_never_ran_is_left_alone():
    fake = fake_cluster(b=job("10"))
    assert classify(fake, recorded("squeue_preempting.txt")) == ([], [], [])
    assert fake.workers["b"].batch_state.reason == "Resources"


def test_ended_jobs_are_replaced_to_keep_the_requested_size():
    fake = fake_cluster(a=job("9", last_phase=RUNNING, ever_ran=True), b=job("10", ever_ran=True))
    replace, _, _ = BurstClusterBase.classify(fake, fake.workers,
                                              SlurmBatch().parse_history(recorded("sacct_duplicates.txt")))
    assert sorted(replace) == ["a", "b"]
    BurstClusterBase._replace(fake, replace)
    assert set(fake.worker_spec) == {"BurstCluster-100", "BurstCluster-101"} and fake.workers == {}
    assert fake.replaced == 2


def test_job_gone_from_squeue_and_sacct_is_replaced_after_five_polls():
    fake = fake_cluster(a=job("77"))
    for _ in range(4):
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
    from daskhpc.progress import Progress

    progress = Progress(enabled=True, min_interval=0)
    for text in ("0/4 workers", "0/4 workers", "4/4 workers"):
        progress.update(text)
    assert capsys.readouterr().err.splitlines() == ["[daskhpc] 0/4 workers", "[daskhpc] 4/4 workers"]
    assert "4/4 workers" in progress.html()


