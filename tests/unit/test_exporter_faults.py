"""The exporter under faults: nothing stale is served, every scrape is bounded.

Fake squeue/sinfo/sdiag/sacct (and qstat/pbsnodes) scripts stand in for a batch system that
answers, fails, or hangs like a SIGSTOPped slurmctld. Wall-clock times are real; the exporter's
clock (intervals) is a test clock.
"""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client import CollectorRegistry

from daskhpc.exporter.server import ConfigError, build_registry, load_config
from daskhpc.exporter.collectors import BatchCollector, CertificateCollector, ExporterStats
from daskhpc.exporter.slurm import SlurmSource
from daskhpc.exporter.pbs import PbsSource
from test_exporter import CONFIG, DATA, Clock, scrape, value

pytestmark = pytest.mark.timeout(60)

SLURM = ("squeue", "sinfo", "sdiag", "sacct")
RECORDED = {"squeue": "squeue.txt", "sinfo": "sinfo.txt", "sdiag": "sdiag.txt", "sacct": "sacct.txt"}


class FakeBatchSystem:
    """A bin dir whose commands answer from recordings, fail, or hang; every start is logged."""

    def __init__(self, tmp_path):
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "calls.log"
        self.pids = tmp_path / "pids"

    def answer(self, *names, delay=0):
        for name in names:
            self._script(name, "%ssed -n p %s" % ("sleep %s; " % delay if delay else "",
                                                  os.path.join(DATA, RECORDED[name])))

    def fail(self, *names):
        for name in names:
            self._script(name, "echo 'Unable to contact slurm controller (connect failure)' >&2; exit 1")

    def hang(self, *names):
        # like a stopped slurmctld: the client waits; its child holds the pipes too
        for name in names:
            self._script(name, "echo $$ >> %s; sleep 300 & echo $! >> %s; wait" % (self.pids, self.pids))

    def _script(self, name, body):
        path = self.bin / name
        path.write_text("#!/bin/sh\necho %s >> %s\n%s\n" % (name, self.log, body))
        path.chmod(0o755)

    def calls(self):
        return self.log.read_text().split() if self.log.exists() else []

    def left_running(self, grace=5.0):
        """Processes the hung commands started that are still alive (zombies count as gone) after ``grace``
        seconds: SIGKILL reaches a killed group's grandchildren asynchronously, after they are reparented."""
        deadline = time.monotonic() + grace
        while (alive := self._alive()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return alive

    def _alive(self):
        alive = []
        for pid in (int(p) for p in (self.pids.read_text().split() if self.pids.exists() else [])):
            try:
                with open("/proc/%d/stat" % pid) as handle:
                    if handle.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except FileNotFoundError:
                pass
        return alive


def collector(fake, clock, **config):
    config = dict(CONFIG, slurm_bin_dir=str(fake.bin), **config)
    stats = ExporterStats()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BatchCollector(SlurmSource(config), config, stats, clock=clock))
    registry.register(stats)
    return registry


def timed_scrape(registry):
    started = time.monotonic()
    samples = scrape(registry)
    return samples, time.monotonic() - started


def names(samples):
    return {name for name, _value in samples}


def reasons(samples):
    return {dict(labels)["source"]: (dict(labels)["reason"], v) for (name, labels), v in samples.items()
            if name == "daskhpc_source_up"}


CLUSTER = {"daskhpc_partition_cores", "daskhpc_jobs", "daskhpc_cluster_cores", "daskhpc_burst_share_ratio"}
HEALTH = {"daskhpc_slurm_server_threads", "daskhpc_slurm_rpc_calls_total"}


# --- a hung controller (SIGSTOP) ------------------------------------------------------------------


def test_hung_controller_every_scrape_ends_within_the_budget(tmp_path):
    """Reported: scrapes took 10, 18.8 and 27.2 s with slurmctld stopped. Now each ends in its budget."""
    fake = FakeBatchSystem(tmp_path)
    fake.hang(*SLURM)
    clock = Clock()
    registry = collector(fake, clock, scrape_budget_seconds=2.0, command_timeout_seconds=1.0)
    for _round in range(3):
        samples, took = timed_scrape(registry)
        assert took < 2.0 + 0.5, took
        assert value(samples, "daskhpc_up") == 0
        assert reasons(samples)["state"] == ("timeout", 0)
        assert not names(samples) & (CLUSTER | HEALTH)
        clock.now += 10
    # squeue timed out, so the same controller was not asked again in those scrapes
    assert fake.calls() == ["squeue"] * 3
    assert fake.left_running() == []  # the command and its children were killed


def test_scrapes_within_the_interval_do_not_wait_for_the_hung_controller_again(tmp_path):
    fake = FakeBatchSystem(tmp_path)
    fake.hang(*SLURM)
    clock = Clock()
    registry = collector(fake, clock, scrape_budget_seconds=2.0, command_timeout_seconds=1.0)
    timed_scrape(registry)
    clock.now += 5  # inside min_interval: nothing is asked, nothing is served as current
    samples, took = timed_scrape(registry)
    assert took < 0.5 and value(samples, "daskhpc_up") == 0 and not names(samples) & CLUSTER
    assert fake.calls() == ["squeue"]


# --- a stopped controller: nothing stale ------------------------------------------------------------


def test_stopped_controller_leaves_no_stale_metrics(tmp_path):
    """Reported: with slurmctld stopped, the last sdiag metrics were served for 20 s while daskhpc_up was 0."""
    fake = FakeBatchSystem(tmp_path)
    fake.answer(*SLURM)
    clock = Clock()
    registry = collector(fake, clock)
    samples = scrape(registry)
    assert value(samples, "daskhpc_up") == 1 and HEALTH <= names(samples) and CLUSTER <= names(samples)
    assert "daskhpc_preemptions_total" in names(samples)
    assert {s: r for s, (r, _value) in reasons(samples).items()} == {"state": "ok", "health": "ok", "accounting": "ok"}

    fake.fail(*SLURM)
    clock.now += 10  # sdiag's 60 s interval is not over, but the controller does not answer any more
    samples = scrape(registry)
    assert value(samples, "daskhpc_up") == 0
    assert not names(samples) & (CLUSTER | HEALTH) and "daskhpc_preemptions_total" not in names(samples)
    assert reasons(samples) == {"state": ("failed", 0), "health": ("skipped", 0), "accounting": ("skipped", 0)}

    fake.answer(*SLURM)
    clock.now += 10  # back: health is read again at once, not at the end of its interval
    samples = scrape(registry)
    assert value(samples, "daskhpc_up") == 1 and HEALTH <= names(samples)
    assert fake.calls().count("sdiag") == 2


def test_a_failing_sdiag_alone_takes_only_its_own_metrics(tmp_path):
    fake = FakeBatchSystem(tmp_path)
    fake.answer("squeue", "sinfo", "sacct")
    fake.fail("sdiag")
    samples = scrape(collector(fake, Clock()))
    assert value(samples, "daskhpc_up") == 1 and CLUSTER <= names(samples)
    assert not names(samples) & HEALTH
    assert reasons(samples)["health"] == ("failed", 0) and reasons(samples)["accounting"] == ("ok", 1)


def test_missing_command_is_named_as_such(tmp_path):
    fake = FakeBatchSystem(tmp_path)  # no commands at all
    samples = scrape(collector(fake, Clock()))
    assert reasons(samples)["state"] == ("not_found", 0)


# --- the budget bounds a whole scrape -----------------------------------------------------------------


def test_budget_bounds_a_scrape_of_slow_commands(tmp_path):
    fake = FakeBatchSystem(tmp_path)
    fake.answer("squeue", delay=1.2)
    fake.answer("sinfo", "sacct")
    fake.hang("sdiag")
    clock = Clock()
    registry = collector(fake, clock, scrape_budget_seconds=3.0, command_timeout_seconds=2.0)
    samples, took = timed_scrape(registry)
    assert took < 3.0 + 0.7, took
    assert value(samples, "daskhpc_up") == 1  # squeue was slow, but answered within its timeout
    assert reasons(samples)["health"] == ("timeout", 0)  # sdiag got only what was left of the budget
    assert reasons(samples)["accounting"] == ("budget", 0)  # and sacct was not started at all
    assert "sacct" not in fake.calls() and "daskhpc_preemptions_total" not in names(samples)
    fake.answer("squeue", "sdiag")
    clock.now += 10  # what the budget left out is asked at the next refresh, not a minute later
    samples = scrape(registry)
    assert reasons(samples)["accounting"] == ("ok", 1) and HEALTH <= names(samples)


def test_pbs_server_that_hangs_is_bounded_too(tmp_path):
    fake = FakeBatchSystem(tmp_path)
    for name in ("qstat", "pbsnodes"):
        fake._script(name, "sleep 300")
    config = {"scheduler": "pbs", "burst_partitions": ["burst"], "production_partitions": ["prod"],
              "pbs_bin_dir": str(fake.bin), "scrape_budget_seconds": 2.0, "command_timeout_seconds": 1.0}
    registry = build_registry(config, source=PbsSource(config))
    samples, took = timed_scrape(registry)
    assert took < 2.5, took
    assert value(samples, "daskhpc_up") == 0 and reasons(samples)["state"] == ("timeout", 0)


# --- the ledger ------------------------------------------------------------------------------------------


def test_unreadable_ledger_takes_its_metrics_away(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('{"event": "issued", "serial": "A1", "subject": "CN=x", "profile": "host", '
                      '"not_after": "2099-01-01T00:00:00Z"}\n')
    stats = ExporterStats()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CertificateCollector(str(ledger), stats, clock=Clock()))
    registry.register(stats)
    samples = scrape(registry)
    assert value(samples, "daskhpc_certificate_expiry_timestamp_seconds", subject="CN=x", profile="host",
                 serial="A1") > 0
    ledger.unlink()
    ledger.mkdir()  # now unreadable as a file
    samples = scrape(registry)
    assert "daskhpc_certificate_expiry_timestamp_seconds" not in names(samples)
    assert "daskhpc_certificates" not in names(samples)
    assert reasons(samples)["ledger"] == ("failed", 0)


# --- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeouts", ["command_timeout_seconds: 8\nscrape_budget_seconds: 8\n",
                                      "command_timeout_seconds: 0\n", "scrape_budget_seconds: fast\n"])
def test_command_timeout_must_fit_in_the_budget(tmp_path, timeouts):
    path = tmp_path / "exporter.yaml"
    path.write_text(timeouts)
    with pytest.raises(ConfigError, match="below scrape_budget_seconds"):
        load_config(str(path))


def test_model_derives_a_budget_under_prometheus_scrape_timeout(lab_site):
    from ansible_collections.onprem.daskhpc.plugins.filter import metrics

    config = metrics.metrics_exporter_config(lab_site)
    assert 0 < config["command_timeout_seconds"] < config["scrape_budget_seconds"] <= 8  # timeout: 10 s
    lab_site["metrics"]["scrape_interval"] = "5s"  # Prometheus then times out after 5 s
    config = metrics.metrics_exporter_config(lab_site)
    assert config["scrape_budget_seconds"] == 4.0 and config["command_timeout_seconds"] == 2.5
