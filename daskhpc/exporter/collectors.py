"""prometheus_client custom collectors: batch-system metrics, CA ledger, exporter self-metrics."""

from __future__ import annotations

import collections
import datetime
import logging
import os
import threading
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from daskhpc.scheduler import UNAVAILABLE_NODE_STATES, BatchError
from daskhpc.core.pki import parse_ledger

log = logging.getLogger("daskhpc.exporter")

# Pending reasons that mean "waiting for cores", as opposed to holds, limits or dependencies.
WAITING_FOR_CORES = ("Resources", "Priority")
# Job states whose cores are held on nodes.
HOLDING_STATES = ("running", "completing", "configuring", "suspended")
# Job states every partition reports, so alerts see 0 rather than nothing.
ALWAYS_REPORTED_JOB_STATES = ("pending", "running")
NODE_CORE_STATES = ("allocated", "idle", "other")


class ExporterStats:
    """Errors, last successes and current status per source (state, health, accounting, ledger)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.errors = collections.Counter()
        self.last_success = {}
        self.status = {}

    def error(self, source, exc):
        """Count and log a failed read (or an unreadable part of one)."""
        log.warning("%s: %s", source, exc)
        with self.lock:
            self.errors[source] += 1

    def failed(self, source, exc, reason, count=True):
        """The source's metrics are absent from now on, for *reason* (daskhpc.scheduler.REASONS).

        Not asking (skipped, budget) is not an error of the source; neither is an absent optional file."""
        if count and reason not in ("skipped", "budget"):
            self.error(source, exc)
        elif self.status.get(source) != reason:  # say it once, not at every scrape
            log.info("%s: %s", source, exc)
        with self.lock:
            self.status[source] = reason

    def success(self, source, when):
        with self.lock:
            self.errors.setdefault(source, 0)
            self.last_success[source] = when
            self.status[source] = "ok"

    def collect(self):
        errors = CounterMetricFamily("daskhpc_scrape_errors", "Failed reads of the batch system or the CA ledger, "
                                     "by source", labels=["source"])
        last = GaugeMetricFamily("daskhpc_last_success_timestamp_seconds", "When each source was last read "
                                 "successfully", labels=["source"])
        up = GaugeMetricFamily("daskhpc_source_up", "1 if the source's metrics in this scrape are current; 0 and "
                               "the reason (timeout, failed, not_found, bad_output, skipped, budget) if they are "
                               "left out", labels=["source", "reason"])
        with self.lock:
            for source, count in sorted(self.errors.items()):
                errors.add_metric([source], count)
            for source, when in sorted(self.last_success.items()):
                last.add_metric([source], when)
            for source, reason in sorted(self.status.items()):
                up.add_metric([source, reason], 1 if reason == "ok" else 0)
        yield errors
        yield last
        yield up


def _partition_of(job):
    # A job pending in several partitions ("prod,burst") is counted under the first it names.
    return job.partition.split(",")[0]


class BatchCollector:
    """Cluster metrics from a :class:`~daskhpc.exporter.source.BatchSource`, cached and throttled.

    The source is read at most once per ``min_interval_seconds`` however often Prometheus (or
    several Prometheus servers) scrape; health and accounting at most once per
    ``slow_interval_seconds``. Nothing stale is served: a source's metrics are served only from
    its last read, within its interval, and only while the batch system answers. When it does not
    (an error, or no answer within ``command_timeout_seconds``), ``daskhpc_up`` is 0,
    ``daskhpc_source_up`` says why for each source, the error is counted, and the metrics of every
    source of that batch system are left out until it answers again; the exporter keeps serving.
    One scrape runs commands for at most ``scrape_budget_seconds``.
    """

    def __init__(self, source, config, stats=None, clock=time.time):
        self.source = source
        self.stats = stats or ExporterStats()
        self.clock = clock
        self.min_interval = float(config.get("min_interval_seconds", 10))
        self.slow_interval = float(config.get("slow_interval_seconds", 60))
        self.budget = float(config.get("scrape_budget_seconds", 8))
        # sacct windows overlap by this much, because slurmdbd may record events late
        self.accounting_overlap = float(config.get("accounting_overlap_seconds", 600))
        self.burst_partitions = set(config.get("burst_partitions", []))
        self.production_partitions = set(config.get("production_partitions", []))
        self.burst_cap_ratio = config.get("burst_max_share_ratio")
        self.burst_cap_cores = config.get("burst_max_cores")
        self.lock = threading.Lock()
        self.state = None
        self.health = None
        self.accounting_up = False
        self.reasons = {}
        self.last_state_attempt = None
        self.last_slow_attempt = None
        self.preempt_since = self.clock()
        self.preempt_seen = set()
        self.preemptions = collections.Counter({p: 0 for p in self.burst_partitions})

    @property
    def up(self):
        return 1 if self.state is not None else 0

    # --- refreshing -------------------------------------------------------------------------

    def _due(self, last, interval, now):
        return last is None or now - last >= interval

    def _read(self, source, read, now):
        """What *read* returns, or None when the source failed (recorded in stats with its reason)."""
        try:
            value = read()
        except BatchError as exc:
            self.reasons[source] = exc.reason
            self.stats.failed(source, exc, self.reasons[source])
            return None
        self.reasons[source] = "ok"
        self.stats.success(source, now)
        return value

    def refresh(self):
        """Read the sources whose data are older than their intervals, within the scrape budget."""
        now = self.clock()
        self.source.deadline = time.monotonic() + self.budget
        try:
            if self._due(self.last_state_attempt, self.min_interval, now):
                self.last_state_attempt = now
                self.state = self._read("state", self.source.read_state, now)
            if self.state is None:
                # The batch system does not answer: what was read from it before is no longer
                # current, and asking it for more would only wait for the same timeout again.
                for source in ("health", "accounting"):
                    self.reasons[source] = "skipped"
                    self.stats.failed(source, "left out: the batch system did not answer", "skipped")
                self.health, self.accounting_up = None, False
                self.last_slow_attempt = None  # read them as soon as it answers again
            elif self._due(self.last_slow_attempt, self.slow_interval, now):
                self.last_slow_attempt = now
                self.health = self._read("health", self.source.read_health, now)
                events = self._read("accounting", lambda: self.source.read_preemptions(self.preempt_since, now), now)
                self.accounting_up = events is not None
                if events is not None:
                    self._count_preemptions(events, now)
                if "budget" in (self.reasons["health"], self.reasons["accounting"]):
                    self.last_slow_attempt = None  # not asked at all: ask at the next scrape
        finally:
            self.source.deadline = None

    def _count_preemptions(self, events, now):
        for event in events:
            key = (event.job_id, event.time)
            if key not in self.preempt_seen and event.time >= self.preempt_since:
                self.preempt_seen.add(key)
                self.preemptions[event.partition] += 1
        # Next window starts a little back, never before what we have already counted.
        self.preempt_since = max(self.preempt_since, now - self.accounting_overlap)
        self.preempt_seen = {k for k in self.preempt_seen if k[1] >= self.preempt_since}

    # --- metrics ----------------------------------------------------------------------------

    def collect(self):
        started = time.monotonic()
        with self.lock:
            self.refresh()
            families = [GaugeMetricFamily("daskhpc_up", "1 if the batch system was read successfully on the "
                                          "last attempt, else 0", value=self.up)]
            if self.state is not None:
                families += self.cluster_metrics(self.state)
            families += list(self.health or [])
            if self.accounting_up:
                preempt = CounterMetricFamily("daskhpc_preemptions", "Jobs preempted (from the accounting "
                                              "records) since the exporter started, by partition",
                                              labels=["partition"])
                for partition, count in sorted(self.preemptions.items()):
                    preempt.add_metric([partition], count)
                families.append(preempt)
            durations = GaugeMetricFamily("daskhpc_batch_command_duration_seconds", "How long the last run of "
                                          "each batch-system command took", labels=["command"])
            for command, seconds in sorted(getattr(self.source, "durations", {}).items()):
                durations.add_metric([command], seconds)
            families.append(durations)
        families.append(GaugeMetricFamily("daskhpc_scrape_duration_seconds", "Time this scrape spent collecting "
                                          "batch-system metrics", value=time.monotonic() - started))
        yield from families

    def partition_class(self, name):
        if name in self.burst_partitions:
            return "burst"
        if name in self.production_partitions:
            return "production"
        return "unknown"

    def cluster_metrics(self, state):
        part_up = GaugeMetricFamily("daskhpc_partition_up", "1 if the partition is up", labels=["partition"])
        part_info = GaugeMetricFamily("daskhpc_partition_info", "Partition class from the site model (always 1)",
                                      labels=["partition", "class"])
        part_cores = GaugeMetricFamily("daskhpc_partition_cores", "Cores of the partition's nodes by state "
                                       "(allocated, idle, other = down/drained/reserved)",
                                       labels=["partition", "state"])
        part_nodes = GaugeMetricFamily("daskhpc_partition_nodes", "Nodes of the partition by node state",
                                       labels=["partition", "state"])
        cluster_cores = GaugeMetricFamily("daskhpc_cluster_cores", "Cores of the whole cluster by state, each "
                                          "node counted once", labels=["state"])
        cluster_nodes = GaugeMetricFamily("daskhpc_cluster_nodes", "Nodes of the whole cluster by node state",
                                          labels=["state"])
        unavailable = GaugeMetricFamily("daskhpc_node_unavailable_since_timestamp_seconds", "When a node that "
                                        "cannot take work (down, drained, ...) entered that state",
                                        labels=["node", "state"])
        cores = collections.Counter()
        nodes = collections.Counter()
        node_partitions = collections.defaultdict(set)
        for partition, is_up in sorted(state.partitions_up.items()):
            part_up.add_metric([partition], 1 if is_up else 0)
            part_info.add_metric([partition, self.partition_class(partition)], 1)
            for core_state in NODE_CORE_STATES:
                cores[(partition, core_state)] += 0
        totals = collections.Counter()
        node_states = collections.Counter()
        for node in state.nodes:
            for partition in node.partitions:
                node_partitions[partition].add(node.name)
                nodes[(partition, node.state)] += 1
                cores[(partition, "allocated")] += node.cpus_allocated
                cores[(partition, "idle")] += node.cpus_idle
                cores[(partition, "other")] += node.cpus_other
            totals["allocated"] += node.cpus_allocated
            totals["idle"] += node.cpus_idle
            totals["other"] += node.cpus_other
            node_states[node.state] += 1
            if node.state in UNAVAILABLE_NODE_STATES and node.unavailable_since is not None:
                unavailable.add_metric([node.name, node.state], node.unavailable_since)
        for (partition, core_state), value in sorted(cores.items()):
            part_cores.add_metric([partition, core_state], value)
        for (partition, node_state), value in sorted(nodes.items()):
            part_nodes.add_metric([partition, node_state], value)
        for core_state in NODE_CORE_STATES:
            cluster_cores.add_metric([core_state], totals[core_state])
        for node_state, value in sorted(node_states.items()):
            cluster_nodes.add_metric([node_state], value)
        families = [part_up, part_info, part_cores, part_nodes, cluster_cores, cluster_nodes, unavailable]
        families += self.job_metrics(state, node_partitions, sum(totals.values()))
        return families

    def job_metrics(self, state, node_partitions, cluster_total_cores):
        jobs = collections.Counter()
        pending = collections.Counter()
        burst_cores = collections.Counter()
        burst_jobs = collections.Counter()
        burst_nodes = set()
        for partition in state.partitions_up:
            for job_state in ALWAYS_REPORTED_JOB_STATES:
                jobs[(partition, job_state)] += 0
        for job in state.jobs:
            partition = _partition_of(job)
            jobs[(partition, job.state)] += job.count
            if job.state == "pending":
                pending[(partition, job.reason)] += job.count
            if partition in self.burst_partitions:
                burst_jobs[(job.user, job.state)] += job.count
                if job.state in HOLDING_STATES:
                    burst_cores[job.user] += job.cpus * job.count
                    burst_nodes.update(job.nodes)
        behind = collections.Counter({p: 0 for p in self.production_partitions})
        for job in state.jobs:
            partition = _partition_of(job)
            if job.state == "pending" and partition in self.production_partitions \
                    and job.reason in WAITING_FOR_CORES and node_partitions.get(partition, set()) & burst_nodes:
                behind[partition] += job.count

        jobs_f = GaugeMetricFamily("daskhpc_jobs", "Jobs by partition and state (pending arrays count every "
                                   "task; finished jobs stay visible for slurmctld's MinJobAge)",
                                   labels=["partition", "state"])
        for (partition, job_state), value in sorted(jobs.items()):
            jobs_f.add_metric([partition, job_state], value)
        pending_f = GaugeMetricFamily("daskhpc_jobs_pending", "Pending jobs by partition and pending reason",
                                      labels=["partition", "reason"])
        for (partition, reason), value in sorted(pending.items()):
            pending_f.add_metric([partition, reason], value)
        cores_f = GaugeMetricFamily("daskhpc_burst_cores", "Cores held by each user's jobs in burst partitions",
                                    labels=["user"])
        for user, value in sorted(burst_cores.items()):
            cores_f.add_metric([user], value)
        burst_jobs_f = GaugeMetricFamily("daskhpc_burst_jobs", "Each user's jobs in burst partitions by state",
                                         labels=["user", "state"])
        for (user, job_state), value in sorted(burst_jobs.items()):
            burst_jobs_f.add_metric([user, job_state], value)
        used = sum(burst_cores.values())
        share = GaugeMetricFamily("daskhpc_burst_share_ratio", "Share of the cluster's cores held by burst jobs "
                                  "(0-1)", value=used / cluster_total_cores if cluster_total_cores else 0.0)
        families = [jobs_f, pending_f, cores_f, burst_jobs_f, share]
        if self.burst_cap_ratio is not None:
            families.append(GaugeMetricFamily("daskhpc_burst_share_cap_ratio", "The site model's cap on the burst "
                                              "share (burst.max_share_percent / 100)",
                                              value=float(self.burst_cap_ratio)))
        if self.burst_cap_cores is not None:
            families.append(GaugeMetricFamily("daskhpc_burst_cap_cores", "The burst QOS's core cap (GrpTRES cpu)",
                                              value=float(self.burst_cap_cores)))
        behind_f = GaugeMetricFamily("daskhpc_production_jobs_pending_behind_burst", "Production jobs waiting "
                                     "for cores while burst jobs hold nodes of their partition (should stay 0 "
                                     "beyond the burst grace time)", labels=["partition"])
        for partition, value in sorted(behind.items()):
            behind_f.add_metric([partition], value)
        families.append(behind_f)
        return families


def _epoch(value):
    """Ledger timestamps: ISO 8601 (naive means UTC) or epoch seconds; None when absent."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().replace("Z", "+00:00")
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


class CertificateCollector:
    """Certificate expiry from the CA's issuance ledger (JSON lines); absent ledger is not an error.

    Only the newest unrevoked certificate of each (subject, profile) is reported, so renewals
    replace their predecessors, and certificates that expired over ``forget_after_seconds`` ago
    are dropped (short-lived user certificates of people who left).
    """

    def __init__(self, path, stats=None, clock=time.time, forget_after_seconds=30 * 86400):
        self.path = path
        self.stats = stats or ExporterStats()
        self.clock = clock
        self.forget_after = forget_after_seconds
        self._cache_key = None
        self._entries = []

    def _read(self):
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._cache_key, self._entries = None, []
            return False
        key = (info.st_mtime_ns, info.st_size)
        if key != self._cache_key:
            with open(self.path, "rb") as handle:
                folded, problems = parse_ledger(handle.read())
            for problem in problems:
                self.stats.error("ledger", "%s %s" % (self.path, problem))
            entries = []
            for serial, entry in folded.items():
                try:
                    entries.append((entry, _epoch(entry.get("not_after")), _epoch(entry.get("revoked_at"))))
                except ValueError as exc:
                    self.stats.error("ledger", "%s serial %s: %s" % (self.path, serial, exc))
            self._cache_key, self._entries = key, entries
        return True

    def collect(self):
        now = self.clock()
        try:
            present = self._read()
        except OSError as exc:
            self._cache_key, self._entries = None, []  # never serve what an earlier read found
            self.stats.failed("ledger", exc, "failed")
            present = False
        else:
            if present:
                self.stats.success("ledger", now)
            else:
                self.stats.failed("ledger", "%s does not exist" % self.path, "not_found", count=False)
        yield GaugeMetricFamily("daskhpc_ca_ledger_present", "1 if the CA's issuance ledger could be read",
                                value=1 if present else 0)
        if not present:
            return
        counts = collections.Counter({"valid": 0, "expired": 0, "revoked": 0})
        newest = {}
        for entry, not_after, revoked_at in self._entries:
            if revoked_at is not None:
                counts["revoked"] += 1
                continue
            if not_after is None:
                continue
            counts["valid" if not_after > now else "expired"] += 1
            key = (str(entry.get("subject", "")), str(entry.get("profile", "")))
            if key not in newest or not_after > newest[key][0]:
                newest[key] = (not_after, str(entry.get("serial", "")))
        by_state = GaugeMetricFamily("daskhpc_certificates", "Certificates in the CA ledger by state",
                                     labels=["state"])
        for cert_state, value in sorted(counts.items()):
            by_state.add_metric([cert_state], value)
        yield by_state
        expiry = GaugeMetricFamily("daskhpc_certificate_expiry_timestamp_seconds", "When the newest unrevoked "
                                   "certificate of each subject and profile expires",
                                   labels=["subject", "profile", "serial"])
        for (subject, profile), (not_after, serial) in sorted(newest.items()):
            if not_after > now - self.forget_after:
                expiry.add_metric([subject, profile, serial], not_after)
        yield expiry
