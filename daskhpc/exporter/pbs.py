"""PBS source for ``daskhpc exporter``: the same ``daskhpc_*`` metrics as on SLURM.

Per refresh: one ``qstat -f -F json`` (jobs), one ``pbsnodes -av -F json`` (nodes) and one
``qstat -Qf -F json`` (whether each queue is enabled and started) -- never a call per node or job; how
PBS's states map onto the shared vocabulary is PBS's adapter's (:mod:`daskhpc.scheduler.pbs`). Finished
jobs are not read (no ``-x``).

Preemptions: PBS keeps no preemption record the exporter can query cheaply, so a requeue is counted
when a burst job seen running is seen queued again with a higher ``run_count`` (preempt_order R,
``qrerun`` or a node failure all look the same here).
"""

from __future__ import annotations

import time

from daskhpc.exporter.source import BatchSource
from daskhpc.scheduler import Preemption
from daskhpc.scheduler.pbs import cluster_state, parse_pbsnodes, parse_qstat_jobs, parse_qstat_queues


class PbsSource(BatchSource):
    scheduler = "pbs"

    def __init__(self, config, runner=None, clock=time.time):
        super().__init__(config)
        if runner is not None:
            self.runner = runner
        self.clock = clock
        self.bin_dir = config.get("pbs_bin_dir") or config.get("slurm_bin_dir") or ""
        self.burst_queues = set(config.get("burst_partitions") or [])
        self.configured_queues = list(config.get("production_partitions") or []) + sorted(self.burst_queues)
        self.last_running = {}   # job id -> run_count of burst jobs seen running
        self.events = []

    def read_state(self):
        jobs = parse_qstat_jobs(self.run("qstat", "-f", "-F", "json"))
        nodes = parse_pbsnodes(self.run("pbsnodes", "-av", "-F", "json"))
        queues = parse_qstat_queues(self.run("qstat", "-Qf", "-F", "json"))
        self._note_requeues(jobs)
        return cluster_state(nodes, jobs, queues, self.configured_queues)

    def _note_requeues(self, jobs):
        now = self.clock()
        running = {}
        for job_id, job in jobs.items():
            if job.queue not in self.burst_queues:
                continue
            if job.state == "R":
                running[job_id] = job.run_count
            elif job.requeued and job_id in self.last_running:
                self.events.append(Preemption(job_id=job_id, partition=job.queue, user=job.user, time=now))
        self.last_running = running
        # keep a day of events; the collector asks with overlapping windows and de-duplicates
        self.events = [e for e in self.events if e.time >= now - 86400]

    def read_preemptions(self, since, until):
        return [e for e in self.events if since <= e.time <= until]
