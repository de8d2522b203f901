"""PBS source for ``daskhpc exporter``: the same ``daskhpc_*`` metrics as on SLURM.

Per refresh: one ``qstat -f -F json`` (jobs), one ``pbsnodes -av -F json`` (nodes) and one
``qstat -Qf -F json`` (whether each queue is enabled and started) -- never a call per node or job.

Mapping onto the exporter's shared vocabulary (``daskhpc/exporter/source.py``):

* partitions are queues; a node serves the queue named in its ``queue`` attribute, else the queues in
  its ``resources_available.Qlist``, else every configured queue (PBS's default: any queue may use any
  node);
* node states: ``free`` -> ``idle`` (``mixed`` when some cores are assigned), ``job-busy``/
  ``job-exclusive``/``busy`` -> ``allocated``, ``offline`` -> ``drained`` (``draining`` while jobs still
  run), ``down`` -> ``down``, ``state-unknown``/``stale`` -> ``unknown``, ``resv-exclusive`` ->
  ``reserved``, ``provisioning`` -> ``maint``, ``unresolvable`` -> ``fail``;
* job states: Q/W/T -> ``pending``, H -> ``pending`` (reason JobHeldUser/JobHeldAdmin), R/B ->
  ``running``, E -> ``completing``, S/U -> ``suspended``; finished jobs are not read (no ``-x``);
* pending reasons from the scheduler's comment: "Insufficient amount of resource" -> ``Resources``,
  "User has reached queue ... running job limit" -> ``QOSMaxJobsPerUserLimit``, other limits ->
  ``QOSMaxCpuPerUserLimit`` / ``QOSGrpCpuLimit``, anything else -> ``Other``;
* preemptions: PBS keeps no preemption record the exporter can query cheaply, so a requeue is counted
  when a burst job seen running is seen queued again with a higher ``run_count`` (preempt_order R,
  ``qrerun`` or a node failure all look the same here).
"""

from __future__ import annotations

import time

from daskhpc.scheduler import BatchError
from daskhpc.exporter.source import BatchSource, ClusterState, Job, Node, Preemption
from daskhpc.core.pbs import PbsError, parse_qstat_queues
from daskhpc.scheduler.pbs import parse_pbsnodes, parse_qstat_jobs, reason_label

JOB_STATES = {"Q": "pending", "W": "pending", "T": "pending", "H": "pending", "R": "running", "B": "running",
              "E": "completing", "S": "suspended", "U": "suspended", "F": "completed", "X": "completed",
              "M": "completed"}
# Most severe first: a node "state-unknown,down" is down.
_NODE_STATE_ORDER = (("down", "down"), ("unresolvable", "fail"), ("offline", "drained"),
                     ("state-unknown", "unknown"), ("stale", "unknown"), ("provisioning", "maint"),
                     ("wait-provisioning", "maint"), ("resv-exclusive", "reserved"),
                     ("job-exclusive", "allocated"), ("job-busy", "allocated"), ("busy", "allocated"),
                     ("free", "idle"))
_UNAVAILABLE = ("down", "fail", "drained", "draining", "unknown", "maint")


def node_state(node):
    for pbs_state, state in _NODE_STATE_ORDER:
        if pbs_state in node.states:
            if state == "idle" and node.ncpus_assigned:
                return "mixed"
            if state == "drained" and node.jobs:
                return "draining"
            return state
    return (node.states[0] if node.states else "unknown").lower()


def cluster_state(nodes, jobs, queues, configured_queues):
    """ClusterState from parsed pbsnodes, qstat jobs and qstat -Q outputs."""
    queue_names = list(queues) or list(configured_queues)
    records = []
    for node in nodes.values():
        state = node_state(node)
        total, assigned = node.ncpus, min(node.ncpus_assigned, node.ncpus)
        serves = [node.queue] if node.queue else (node.qlist or list(configured_queues) or queue_names)
        unavailable = state in _UNAVAILABLE
        records.append(Node(
            name=node.name, partitions=serves, state=state, cpus=total, cpus_allocated=assigned,
            cpus_idle=0 if unavailable else total - assigned, cpus_other=total - assigned if unavailable else 0,
            unavailable_since=node.last_state_change if unavailable else None))
    job_records = []
    for job in jobs.values():
        state = JOB_STATES.get(job.state, job.state.lower())
        job_records.append(Job(partition=job.queue, state=state, user=job.user, cpus=job.ncpus,
                               reason=reason_label(job) if state == "pending" else "",
                               nodes=list(job.hosts) if state != "pending" else []))
    partitions_up = {}
    for name, attrs in queues.items():
        partitions_up[name] = all((attrs.get(key) or ["False"])[0] == "True" for key in ("enabled", "started"))
    return ClusterState(nodes=records, jobs=job_records, partitions_up=partitions_up)


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
        try:
            queues = parse_qstat_queues(self.run("qstat", "-Qf", "-F", "json"))
        except PbsError as exc:
            raise BatchError(str(exc), "bad_output") from exc
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
