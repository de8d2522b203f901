"""The exporter on recorded squeue/sinfo/sdiag/sacct output (no daemons).

Fake `squeue`, `sinfo`, `sdiag` and `sacct` scripts in a temporary bin dir print the recorded
output and log each call, so the tests also check how often the batch system is asked.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daskhpc.exporter.server import ConfigError, build_registry, load_config
from debian_promtool import find_promtool
from daskhpc.exporter.collectors import BatchCollector, ExporterStats
from daskhpc.exporter.slurm import SlurmSource
from daskhpc.scheduler.slurm import (
    array_task_count,
    normalise_node_state,
    parse_sacct_preemptions,
    parse_sdiag,
    parse_sinfo,
    parse_squeue,
)
from daskhpc.scheduler import BatchError

DATA = os.path.join(os.path.dirname(__file__), "data", "exporter")
CONFIG = {
    "scheduler": "slurm",
    "burst_partitions": ["burst"],
    "production_partitions": ["prod", "bigmem"],
    "burst_max_share_ratio": 0.5,
    "burst_max_cores": 24,
    "min_interval_seconds": 10,
    "slow_interval_seconds": 60,
}


def recorded(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return handle.read()


class Clock:
    def __init__(self, now=1714564800.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def slurm_bin(tmp_path):
    """A bin dir with fake SLURM commands printing recorded output; calls are logged to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for command, data in (("squeue", "squeue.txt"), ("sinfo", "sinfo.txt"), ("sdiag", "sdiag.txt"),
                          ("sacct", "sacct.txt")):
        script = bin_dir / command
        script.write_text(textwrap.dedent("""\
            #!/bin/sh
            echo "%s $*" >> %s
            cat %s
            """ % (command, log, os.path.join(DATA, data))))
        script.chmod(0o755)
    return bin_dir


def calls(bin_dir):
    log = bin_dir.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def scrape(registry):
    """{(name, frozenset(labels)): value} of one scrape, as Prometheus would parse it."""
    text = generate_latest(registry).decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


# --- parsers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("job_id", "count"), [
    ("101", 1), ("112_7", 1), ("105_[1-1000%10]", 1000), ("9_[1-3,5,7-9]", 7), ("9_[0-99:2]", 50),
    ("9_[4]", 1),
])
def test_array_task_count(job_id, count):
    assert array_task_count(job_id) == count


@pytest.mark.parametrize(("raw", "state"), [
    ("idle", "idle"), ("down*", "down"), ("drained*", "drained"), ("idle~", "idle"), ("mixed#", "mixed"),
    ("drained+maint", "drained"), ("ALLOCATED", "allocated"),
])
def test_normalise_node_state(raw, state):
    assert normalise_node_state(raw) == state


def test_parse_squeue_recorded():
    jobs = parse_squeue(recorded("squeue.txt"))
    assert len(jobs) == 13
    held = jobs[4]
    assert (held.partition, held.state, held.reason, held.count) == ("prod", "pending", "JobHeldUser", 1000)
    first = jobs[0]
    assert (first.user, first.cpus, first.nodes, first.reason) == ("alice", 8, ["n1", "n2"], "")


def test_parse_squeue_rejects_unexpected_format():
    with pytest.raises(BatchError, match="want 7 fields"):
        parse_squeue("JOBID PARTITION NAME USER\n")


def test_parse_sinfo_merges_partitions_and_reads_down_time():
    state = parse_sinfo(recorded("sinfo.txt"))
    nodes = {n.name: n for n in state.nodes}
    assert len(nodes) == 6
    assert nodes["n1"].partitions == ["prod", "burst"]
    assert nodes["n6"].state == "drained"
    assert nodes["n6"].unavailable_since == time.mktime(time.strptime("2024-05-01T10:00:00", "%Y-%m-%dT%H:%M:%S"))
    assert nodes["n1"].unavailable_since is None
    assert state.partitions_up == {"prod": True, "burst": True, "bigmem": True}


def test_parse_sinfo_rejects_bad_cpu_counts():
    with pytest.raises(BatchError, match="CPU counts"):
        parse_sinfo("n1|prod|up|idle|8|Unknown\n")


def test_parse_sdiag_recorded():
    parsed = parse_sdiag(recorded("sdiag.txt"))
    values = parsed["values"]
    assert values[("", "Server thread count")] == 3
    assert values[("", "DBD Agent queue size")] == 2
    assert values[("main", "Last cycle")] == 1234
    assert values[("backfill", "Last cycle")] == 3456
    assert values[("backfill", "Total cycles")] == 30
    assert parsed["rpc"]["REQUEST_JOB_INFO"] == (118, 106200)
    assert "root" not in parsed["rpc"]


def test_parse_sacct_keeps_only_preemptions():
    events = parse_sacct_preemptions(recorded("sacct.txt"))
    assert [(e.job_id, e.partition, e.user) for e in events] == [("111", "burst", "bob"), ("114", "burst", "alice")]


# --- collector on recorded output ---------------------------------------------------------------


@pytest.fixture
def registry(slurm_bin):
    return build_registry(dict(CONFIG, slurm_bin_dir=str(slurm_bin)))


def test_partition_cores_and_nodes(registry):
    samples = scrape(registry)
    assert value(samples, "daskhpc_up") == 1
    # prod = n1..n4: allocated 8+4+4+8, idle 0+4+4+0
    assert value(samples, "daskhpc_partition_cores", partition="prod", state="allocated") == 24
    assert value(samples, "daskhpc_partition_cores", partition="prod", state="idle") == 8
    assert value(samples, "daskhpc_partition_cores", partition="bigmem", state="other") == 8
    assert value(samples, "daskhpc_partition_nodes", partition="bigmem", state="drained") == 1
    assert value(samples, "daskhpc_partition_nodes", partition="prod", state="mixed") == 3
    # the whole cluster counts each node once although n1..n6 are also in burst
    assert value(samples, "daskhpc_cluster_cores", state="allocated") == 26
    assert value(samples, "daskhpc_cluster_cores", state="other") == 8
    assert value(samples, "daskhpc_cluster_nodes", state="drained") == 1
    assert value(samples, "daskhpc_partition_info", partition="burst", **{"class": "burst"}) == 1
    assert value(samples, "daskhpc_node_unavailable_since_timestamp_seconds", node="n6", state="drained") > 0


def test_jobs_by_partition_state_and_reason(registry):
    samples = scrape(registry)
    # held array of 1000 + Resources + Priority + the job pending in "prod,bigmem"
    assert value(samples, "daskhpc_jobs", partition="prod", state="pending") == 1003
    assert value(samples, "daskhpc_jobs_pending", partition="prod", reason="JobHeldUser") == 1000
    assert value(samples, "daskhpc_jobs_pending", partition="burst", reason="QOSMaxCpuPerUserLimit") == 1
    assert value(samples, "daskhpc_jobs", partition="prod", state="completed") == 1
    assert value(samples, "daskhpc_jobs", partition="burst", state="preempted") == 1
    # a job pending in two partitions counts under the first
    assert value(samples, "daskhpc_jobs_pending", partition="prod", reason="Dependency") == 1
    # partitions without running jobs still report 0, so alerts see a value
    assert value(samples, "daskhpc_jobs", partition="bigmem", state="running") == 0


def test_burst_usage_and_share(registry):
    samples = scrape(registry)
    assert value(samples, "daskhpc_burst_cores", user="alice") == 12
    assert value(samples, "daskhpc_burst_cores", user="bob") == 3
    assert value(samples, "daskhpc_burst_jobs", user="alice", state="pending") == 1
    assert value(samples, "daskhpc_burst_share_ratio") == pytest.approx(15 / 48)
    assert value(samples, "daskhpc_burst_share_cap_ratio") == 0.5
    assert value(samples, "daskhpc_burst_cap_cores") == 24


def test_production_pending_behind_burst(registry):
    samples = scrape(registry)
    # prod: Resources + Priority jobs wait while burst holds n1..n3; the held array does not count
    assert value(samples, "daskhpc_production_jobs_pending_behind_burst", partition="prod") == 2
    # bigmem: burst job 103 holds n5
    assert value(samples, "daskhpc_production_jobs_pending_behind_burst", partition="bigmem") == 1


def test_production_pending_not_behind_burst_is_zero():
    state = parse_sinfo(recorded("sinfo.txt"))
    state.jobs = [j for j in parse_squeue(recorded("squeue.txt")) if j.partition != "burst"]

    class Source(SlurmSource):
        def read_state(self):
            return state

        def read_health(self):
            return []

        def read_preemptions(self, since, until):
            return []

    samples = scrape(build_registry(CONFIG, source=Source(CONFIG)))
    assert value(samples, "daskhpc_production_jobs_pending_behind_burst", partition="prod") == 0
    assert value(samples, "daskhpc_burst_share_ratio") == 0


def test_scheduler_health_in_base_units(registry):
    samples = scrape(registry)
    assert value(samples, "daskhpc_slurm_server_threads") == 3
    assert value(samples, "daskhpc_slurm_schedule_cycle_last_seconds") == pytest.approx(0.001234)
    assert value(samples, "daskhpc_slurm_backfill_cycle_max_seconds") == pytest.approx(0.009)
    assert value(samples, "daskhpc_slurm_rpc_calls_total", type="request_job_info") == 118
    assert value(samples, "daskhpc_slurm_rpc_time_seconds_total", type="request_job_info") == pytest.approx(0.1062)
    assert value(samples, "daskhpc_slurm_jobs_submitted_total") == 1520


def test_one_call_per_command_per_interval(slurm_bin):
    clock = Clock()
    source = SlurmSource(dict(CONFIG, slurm_bin_dir=str(slurm_bin)))
    collector = BatchCollector(source, CONFIG, ExporterStats(), clock=clock)
    for _round in range(5):
        list(collector.collect())
    made = [c.split()[0] for c in calls(slurm_bin)]
    assert made.count("squeue") == 1 and made.count("sinfo") == 1
    assert made.count("sdiag") == 1 and made.count("sacct") == 1
    clock.now += 10
    list(collector.collect())
    made = [c.split()[0] for c in calls(slurm_bin)]
    assert made.count("squeue") == 2 and made.count("sdiag") == 1
    squeue_call = calls(slurm_bin)[0]
    assert "--states=all" in squeue_call and " -r" not in squeue_call
    # without --all an unprivileged exporter does not see partitions restricted by AllowGroups
    assert all(" --all " in c for c in calls(slurm_bin) if c.startswith(("squeue", "sinfo")))


def test_preemptions_counted_incrementally(slurm_bin):
    """sacct is asked for a sliding window; an event seen twice is counted once."""
    start = time.mktime(time.strptime("2024-05-01T12:00:00", "%Y-%m-%dT%H:%M:%S"))
    clock = Clock(start)
    source = SlurmSource(dict(CONFIG, slurm_bin_dir=str(slurm_bin)))
    collector = BatchCollector(source, CONFIG, ExporterStats(), clock=clock)
    clock.now = start + 60
    list(collector.collect())
    assert collector.preemptions["burst"] == 2
    clock.now = start + 120
    list(collector.collect())  # same recorded events again: not counted twice
    assert collector.preemptions["burst"] == 2
    sacct_calls = [c for c in calls(slurm_bin) if c.startswith("sacct")]
    assert len(sacct_calls) == 2
    assert "--starttime 2024-05-01T12:00:00" in sacct_calls[0]
    assert "--state=PREEMPTED" in sacct_calls[0] and "--duplicates" in sacct_calls[0]


def test_preemptions_before_start_are_not_counted(slurm_bin):
    clock = Clock(time.mktime(time.strptime("2024-05-01T12:00:07", "%Y-%m-%dT%H:%M:%S")))
    source = SlurmSource(dict(CONFIG, slurm_bin_dir=str(slurm_bin)))
    collector = BatchCollector(source, CONFIG, ExporterStats(), clock=clock)
    list(collector.collect())
    assert collector.preemptions["burst"] == 1  # only 114 (12:00:09) is after the start


# --- batch system down -------------------------------------------------------------------------


def test_batch_system_down_reports_error_and_keeps_serving(tmp_path):
    config = dict(CONFIG, slurm_bin_dir=str(tmp_path / "no-such-dir"))
    clock = Clock()
    stats = ExporterStats()
    collector = BatchCollector(SlurmSource(config), config, stats, clock=clock)
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    registry.register(stats)
    samples = scrape(registry)
    assert value(samples, "daskhpc_up") == 0
    assert value(samples, "daskhpc_scrape_errors_total", source="state") == 1
    assert not any(name == "daskhpc_partition_cores" for name, _value in samples)
    clock.now += 10
    samples = scrape(registry)
    assert value(samples, "daskhpc_scrape_errors_total", source="state") == 2


def test_failing_command_is_an_error_not_a_crash(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("squeue", "sinfo", "sdiag", "sacct"):
        script = bin_dir / command
        script.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n")
        script.chmod(0o755)
    samples = scrape(build_registry(dict(CONFIG, slurm_bin_dir=str(bin_dir))))
    assert value(samples, "daskhpc_up") == 0
    assert value(samples, "daskhpc_scrape_errors_total", source="state") == 1
    assert value(samples, "daskhpc_source_up", source="state", reason="failed") == 0
    # a controller that does not answer squeue is not asked for sdiag and sacct in the same scrape
    for source in ("health", "accounting"):
        assert value(samples, "daskhpc_source_up", source=source, reason="skipped") == 0


# --- configuration and output ------------------------------------------------------------------


def test_load_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "exporter.yaml"
    path.write_text("listen_port: 9817\nburst_partition: burst\n")
    with pytest.raises(ConfigError, match="unknown keys burst_partition"):
        load_config(str(path))


def test_load_config_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="slurm_exporter role"):
        load_config(str(tmp_path / "missing.yaml"))


def test_names_follow_conventions(registry):
    text = generate_latest(registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert all(n.startswith("daskhpc_") for n in names)
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


def test_promtool_check_metrics_on_real_output(registry):
    text = generate_latest(registry)
    result = subprocess.run([find_promtool(), "check", "metrics"], input=text, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


def test_once_prints_a_scrape(tmp_path, slurm_bin, capsys):
    from daskhpc.exporter.server import main

    config = tmp_path / "exporter.yaml"
    config.write_text("burst_partitions: [burst]\nproduction_partitions: [prod, bigmem]\nslurm_bin_dir: %s\n"
                      % slurm_bin)
    assert main(["--config", str(config), "--once"]) == 0
    assert "daskhpc_partition_cores{partition=\"prod\",state=\"allocated\"} 24.0" in capsys.readouterr().out


# --- output recorded on the lab (SLURM 22.05), checked against squeue -r / sinfo per partition ---


def test_lab_recording_matches_slurms_own_per_partition_counts(tmp_path):
    """lab-*.txt were recorded together with `sinfo -o '%R|%C'` (prod 32/0/0/32, bigmem 0/16/0/16,
    burst 32/16/0/48) and `squeue -r --states=all -o '%P|%T' | sort | uniq -c` (prod: 1000 pending,
    1 running, 1 cancelled; burst: 2 pending, 2 cancelled)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("squeue", "sinfo", "sdiag", "sacct"):
        script = bin_dir / command
        script.write_text("#!/bin/sh\ncat %s\n" % os.path.join(DATA, "lab-%s.txt" % command))
        script.chmod(0o755)
    samples = scrape(build_registry(dict(CONFIG, slurm_bin_dir=str(bin_dir))))
    expected_cores = {"prod": (32, 0, 0), "bigmem": (0, 16, 0), "burst": (32, 16, 0)}
    for partition, (alloc, idle, other) in expected_cores.items():
        assert value(samples, "daskhpc_partition_cores", partition=partition, state="allocated") == alloc
        assert value(samples, "daskhpc_partition_cores", partition=partition, state="idle") == idle
        assert value(samples, "daskhpc_partition_cores", partition=partition, state="other") == other
    assert value(samples, "daskhpc_jobs", partition="prod", state="pending") == 1000
    assert value(samples, "daskhpc_jobs", partition="prod", state="running") == 1
    assert value(samples, "daskhpc_jobs", partition="prod", state="cancelled") == 1
    assert value(samples, "daskhpc_jobs", partition="burst", state="pending") == 2
    assert value(samples, "daskhpc_jobs", partition="burst", state="cancelled") == 2
    # the sentence slurmctld sent is kept, its job-specific details are not
    assert value(samples, "daskhpc_jobs_pending", partition="burst",
                 reason="Job's QOS not permitted to use this partition") == 2
    assert value(samples, "daskhpc_production_jobs_pending_behind_burst", partition="prod") == 0
    assert value(samples, "daskhpc_slurm_server_threads") >= 1
    assert value(samples, "daskhpc_cluster_cores", state="allocated") == 32


def test_lab_sacct_recording_yields_preemptions():
    events = parse_sacct_preemptions(recorded("lab-sacct.txt"))
    assert len(events) == len(recorded("lab-sacct.txt").splitlines()) >= 1
    assert {e.partition for e in events} == {"burst"}


def test_pbs_source_is_found_by_scheduler_name():
    from daskhpc.exporter.server import source_class
    from daskhpc.exporter.source import BatchSource

    assert source_class("slurm") is SlurmSource
    assert issubclass(source_class("pbs"), BatchSource)
    assert source_class("pbs").scheduler == "pbs"
