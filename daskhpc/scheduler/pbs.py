"""OpenPBS for the Dask client, the exporter and the audit: read ``qstat -f -F json``, ``pbsnodes -av -F json``
and ``qstat -Qf -F json``, and the whole cluster's state from them (:func:`cluster_state`); for the audit, the
queues and scheduler from qmgr's ``print`` output and the runs from the server's accounting log
(:func:`accounting_runs`).

The qmgr side (``print server``, ``qstat -Qf -F json``, the attribute tables) lives in the collection's
``module_utils/_core/pbs.py``, shipped here as :mod:`daskhpc.core.pbs`; its JSON loader is reused so that
repeated keys (entity limits) are kept.

Formats (OpenPBS src/cmds/qstat.c, src/cmds/pbsnodes.c, src/lib/Libutil/pbs_json.c): both print
``{"timestamp":N,"pbs_version":"..","pbs_server":"..", "Jobs"|"nodes":{...}}``; a value that parses
as a number is a JSON number; ``pbsnodes`` leaves zero values out of ``resources_assigned`` and lists a
node's jobs as an array of job ids (``/slot`` suffixes removed).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime

from daskhpc import scheduler
from daskhpc.core import pbs as pbsmodel
from daskhpc.core.pbs import PbsError, loads_pbs_json, time_seconds
from daskhpc.scheduler import (ENDED, ENDING, PENDING, RUNNING, STUCK, SUSPENDED, UNAVAILABLE_NODE_STATES, BatchError,
                               BatchSystem, ClusterState, Job, JobState, Node, parse_int)

# job_state letters (qstat(1B)): phases the BurstCluster acts on.
PBS_PHASES = {
    "Q": PENDING, "W": PENDING, "T": PENDING,
    "R": RUNNING, "B": RUNNING,
    "E": ENDING,
    "S": SUSPENDED, "U": SUSPENDED,
    "H": STUCK,  # held by the system (e.g. too many failed starts): cancel and replace
    "F": ENDED, "X": ENDED, "M": ENDED,
}
STATE_NAMES = {"Q": "queued", "W": "waiting", "T": "transit", "R": "running", "B": "begun", "E": "exiting",
               "S": "suspended", "U": "user_suspended", "H": "held", "F": "finished", "X": "expired",
               "M": "moved"}
# Exit_status values PBS sets itself (src/include/job.h)
JOB_EXEC_KILL_WALLTIME = -29
EXIT_REASONS = {-24: "ncpus (burst) exceeded", -25: "ncpus (sum) exceeded", -26: "vmem exceeded",
                -27: "mem exceeded", -28: "cput exceeded", JOB_EXEC_KILL_WALLTIME: "walltime exceeded"}

_TIME_FORMAT = "%a %b %d %H:%M:%S %Y"  # ctime(3), as qstat prints stime/mtime/obittime
# Where every PBS host says where PBS is installed (PBS_EXEC); PBS_CONF_FILE is ignored on purpose, as
# every PBS_* variable is (PbsBatch.environment_prefixes).
PBS_CONF = "/etc/pbs.conf"


def pbs_command(name, conf=PBS_CONF):
    """A PBS client command by absolute path: ``$PBS_EXEC/bin/<name>`` from ``/etc/pbs.conf``.

    OpenPBS installs its commands under PBS_EXEC (e.g. /opt/pbs/bin), which only login shells put on
    PATH (/etc/profile.d/pbs.sh); a notebook kernel or a script started over SSH has no such PATH.
    Without the file (or the command in it), the bare name is returned and PATH decides.
    """
    try:
        with open(conf, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return name
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "PBS_EXEC":
            path = os.path.join(value.strip().strip('"'), "bin", name)
            if os.access(path, os.X_OK):
                return path
    return name


def _time(text):
    try:
        return datetime.strptime(str(text).strip(), _TIME_FORMAT)
    except (TypeError, ValueError):
        return None


def exec_hosts(exec_host):
    """``cn03/0*2+cn04/1`` -> ``["cn03", "cn04"]`` (order kept, duplicates dropped)."""
    hosts = []
    for chunk in (exec_host or "").split("+"):
        host = chunk.split("/", 1)[0].strip()
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def pending_reason(comment):
    """The scheduler's comment on a job that is not running, without the 'Not Running: ' prefix."""
    text = (comment or "").strip()
    for prefix in ("Not Running: ", "Can Never Run: "):
        if text.startswith(prefix):
            return text[len(prefix):].strip()
    return text


@dataclass
class PbsJob:
    job_id: str
    name: str
    user: str
    state: str            # job_state letter
    queue: str
    comment: str = ""
    exec_host: str = ""
    exec_vnode: str = ""
    hosts: list = field(default_factory=list)
    ncpus: int = 0
    run_count: int = 0
    rerunable: bool = True
    exit_status: int | None = None
    hold_types: str = "n"
    walltime_s: int | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def phase(self):
        return PBS_PHASES.get(self.state, PENDING)

    @property
    def requeued(self):
        """Queued again after having run: requeued by preemption (preempt_order R), qrerun or a node failure."""
        return self.state in ("Q", "H", "W") and self.run_count > 0

    @property
    def reason(self):
        if self.state in ("Q", "W", "T", "H"):
            return pending_reason(self.comment)
        if self.exit_status in EXIT_REASONS:
            return EXIT_REASONS[self.exit_status]
        return ""

    @property
    def hit_walltime(self):
        return self.exit_status == JOB_EXEC_KILL_WALLTIME


def _split_dsv(line, delimiter):
    """Fields of one ``-F dsv`` line; qstat escapes a delimiter inside a value with a backslash."""
    fields, current, chars = [], [], iter(line)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            current.append(following if following == delimiter else char + following)
        elif char == delimiter:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def parse_qstat_dsv(text, delimiter="|"):
    """``qstat -f [-x] -F dsv`` -> {job id: attributes}, laid out as ``-F json`` lays them out.

    One line per job, ``Job Id: 12.pbs|Job_Name=x|Resource_List.ncpus=1|...``; ``name.resource``
    attributes become nested mappings, as in JSON. Values stay strings.
    """
    jobs = {}
    for line in text.splitlines():
        if not line.startswith("Job Id: "):
            continue
        fields = _split_dsv(line, delimiter)
        attrs = {}
        for item in fields[1:]:
            key, sep, value = item.partition("=")
            if not sep:
                continue
            name, dot, resource = key.partition(".")
            if dot:
                attrs.setdefault(name, {})[resource] = value
            else:
                attrs[key] = value
        jobs[fields[0][len("Job Id: "):].strip()] = attrs
    return jobs


def parse_qstat_jobs(text):
    """``qstat -f [-x] -F json`` (or ``-F dsv``) -> {job id: PbsJob}. Empty output (no jobs) gives {}."""
    if not text.strip():
        return {}
    if text.lstrip().startswith("Job Id: "):
        return jobs_from(parse_qstat_dsv(text))
    try:
        data = loads_pbs_json(text)
    except PbsError as exc:
        raise BatchError(str(exc), "bad_output") from exc
    return jobs_from(data.get("Jobs") or {})


def jobs_from(attributes):
    """{job id: qstat's attributes} -> {job id: PbsJob}."""
    jobs = {}
    for job_id, attrs in attributes.items():
        resources = attrs.get("Resource_List") or {}
        walltime = resources.get("walltime")
        try:
            walltime_s = time_seconds(walltime) if walltime is not None else None
        except ValueError:
            walltime_s = None
        jobs[job_id] = PbsJob(
            job_id=job_id,
            name=str(attrs.get("Job_Name", "")),
            user=str(attrs.get("Job_Owner", "")).split("@", 1)[0],
            state=str(attrs.get("job_state", "")),
            queue=str(attrs.get("queue", "")),
            comment=str(attrs.get("comment", "")),
            exec_host=str(attrs.get("exec_host", "")),
            exec_vnode=str(attrs.get("exec_vnode", "")),
            hosts=exec_hosts(attrs.get("exec_host")),
            ncpus=parse_int(resources.get("ncpus"), 0),
            run_count=parse_int(attrs.get("run_count"), 0),
            rerunable=str(attrs.get("Rerunable", "True")) == "True",
            exit_status=parse_int(attrs.get("Exit_status")),
            hold_types=str(attrs.get("Hold_Types", "n")),
            walltime_s=walltime_s,
            start=_time(attrs.get("stime")),
            end=_time(attrs.get("obittime")),
        )
    return jobs


@dataclass
class PbsNode:
    name: str
    states: list             # e.g. ["free"], ["state-unknown", "down"]
    ncpus: int
    ncpus_assigned: int
    jobs: list
    comment: str = ""
    queue: str = ""
    qlist: list = field(default_factory=list)
    last_state_change: float | None = None


def parse_pbsnodes(text):
    """``pbsnodes -av -F json`` -> {node: PbsNode}. Zero values absent from resources_assigned read as 0."""
    try:
        data = loads_pbs_json(text)
    except PbsError as exc:
        raise BatchError(str(exc), "bad_output") from exc
    nodes = {}
    for name, attrs in (data.get("nodes") or {}).items():
        available = attrs.get("resources_available") or {}
        assigned = attrs.get("resources_assigned") or {}
        qlist = available.get("Qlist") or ""
        change = attrs.get("last_state_change_time")
        nodes[name] = PbsNode(
            name=name,
            states=[s.strip() for s in str(attrs.get("state", "")).split(",") if s.strip()],
            ncpus=parse_int(available.get("ncpus"), 0),
            ncpus_assigned=parse_int(assigned.get("ncpus"), 0),
            jobs=[str(j) for j in attrs.get("jobs") or []],
            comment=str(attrs.get("comment", "")),
            queue=str(attrs.get("queue", "")),
            qlist=[q.strip() for q in str(qlist).split(",") if q.strip()],
            last_state_change=float(change) if isinstance(change, (int, float)) else None,
        )
    return nodes


# --- the BatchSystem for BurstCluster -------------------------------------------------------------------


def _short(job_id):
    return str(job_id).split(".", 1)[0]


class PbsBatch(BatchSystem):
    """Job state for a BurstCluster's jobs: one ``qstat -f -x -F dsv <ids>`` per poll.

    Not ``-F json``: OpenPBS's qstat (23.06.06, master cd7ab5e) prints only the first of several job
    ids in JSON (src/cmds/qstat.c keeps the "Jobs" object of the first status call only; the other
    ids' jobs are dropped, exit status 0), found on the PBS lab. DSV prints every job, one per line.

    ``-x`` includes finished jobs while the server keeps history (``job_history_enable``), so jobs that
    ended at walltime are seen with their exit status. qsub prints ``123.server``; dask-jobqueue keeps the
    number, so states are indexed by both.
    """

    name = "pbs"
    # PBS_DEFAULT/PBS_SERVER/PBS_CONF_FILE pick another server, PBS_DPREFIX changes which lines are
    # directives (the script's #PBS lines would be ignored), PBS_ACCOUNT the account: none may reach qsub.
    environment_prefixes = ("PBS_",)

    def __init__(self, qstat=None):
        self.qstat = qstat or pbs_command("qstat")

    def query_command(self, job_ids):
        return [self.qstat, "-f", "-x", "-F", "dsv"] + list(job_ids)

    def parse_query(self, text):
        states = {}
        for job_id, job in parse_qstat_jobs(text).items():
            state = JobState(job_id=job_id, state=STATE_NAMES.get(job.state, job.state), phase=job.phase,
                             reason=job.reason, start=job.start, end=job.end, time_limit_s=job.walltime_s,
                             nodes=",".join(job.hosts), restarts=job.run_count)
            states[job_id] = state
            states.setdefault(_short(job_id), state)
        return states

    async def query(self, job_ids):
        job_ids = [str(j) for j in job_ids if j]
        if not job_ids:
            return {}
        command = self.query_command(job_ids)
        returncode, text, errors = await scheduler.run_command(command, env=self.command_environment())
        # qstat still prints the jobs it knows when some ids are unknown (purged from history):
        # those are simply absent, and the cluster replaces them after a few polls.
        if returncode != 0 and not text.strip().startswith("Job Id: "):
            unknown_only = errors and all("Unknown Job Id" in line or not line.strip()
                                          for line in errors.splitlines())
            if not unknown_only:
                raise BatchError("%s failed (exit %d): %s" % (" ".join(command), returncode, errors.strip()))
        states = self.parse_query(text)
        return {j: states[j] for j in job_ids if j in states}


# Pending reasons in the exporter's shared vocabulary (SLURM's names where the meaning is the same).
def reason_label(job):
    """A low-cardinality pending reason for metrics."""
    if job.state == "H":
        return "JobHeldUser" if "u" in job.hold_types else "JobHeldAdmin"
    if job.state == "W":
        return "BeginTime"
    text = pending_reason(job.comment)
    if not text:
        return "None"
    # The second is what OpenPBS 23.06.06 prints when a job's chunks fit on no node right now.
    if text.startswith(("Insufficient amount of resource", "Not enough free nodes available")):
        return "Resources"
    if re.search(r"User has reached (queue|server) .*running job limit", text):
        return "QOSMaxJobsPerUserLimit"
    if "limit" in text.lower():
        return "QOSMaxCpuPerUserLimit" if re.search(r"\buser\b", text, re.IGNORECASE) else "QOSGrpCpuLimit"
    return "Other"


# --- the whole cluster, for the exporter ------------------------------------------------------------
#
# PBS in the vocabulary every batch system shares (daskhpc.scheduler):
#
# * partitions are queues; a node serves the queue named in its ``queue`` attribute, else the queues in
#   its ``resources_available.Qlist``, else every configured queue (PBS's default: any queue may use any
#   node);
# * node states: ``free`` -> ``idle`` (``mixed`` when some cores are assigned), ``job-busy``/
#   ``job-exclusive``/``busy`` -> ``allocated``, ``offline`` -> ``drained`` (``draining`` while jobs still
#   run), ``down`` -> ``down``, ``state-unknown``/``stale`` -> ``unknown``, ``resv-exclusive`` ->
#   ``reserved``, ``provisioning`` -> ``maint``, ``unresolvable`` -> ``fail``;
# * job states: Q/W/T -> ``pending``, H -> ``pending`` (reason JobHeldUser/JobHeldAdmin), R/B ->
#   ``running``, E -> ``completing``, S/U -> ``suspended``;
# * pending reasons from the scheduler's comment (:func:`reason_label`): "Insufficient amount of resource"
#   -> ``Resources``, "User has reached queue ... running job limit" -> ``QOSMaxJobsPerUserLimit``, other
#   limits -> ``QOSMaxCpuPerUserLimit`` / ``QOSGrpCpuLimit``, anything else -> ``Other``.


def parse_qstat_queues(text):
    """``qstat -Qf -F json`` -> {queue: {attr[.res]: [values]}}, read by the core's qmgr side."""
    try:
        return pbsmodel.parse_qstat_queues(text)
    except PbsError as exc:
        raise BatchError(str(exc), "bad_output") from exc


# job_state letters in the shared vocabulary (SLURM's long names)
SHARED_JOB_STATES = {"Q": "pending", "W": "pending", "T": "pending", "H": "pending", "R": "running",
                     "B": "running", "E": "completing", "S": "suspended", "U": "suspended", "F": "completed",
                     "X": "completed", "M": "completed"}
# Most severe first: a node "state-unknown,down" is down.
_NODE_STATE_ORDER = (("down", "down"), ("unresolvable", "fail"), ("offline", "drained"),
                     ("state-unknown", "unknown"), ("stale", "unknown"), ("provisioning", "maint"),
                     ("wait-provisioning", "maint"), ("resv-exclusive", "reserved"),
                     ("job-exclusive", "allocated"), ("job-busy", "allocated"), ("busy", "allocated"),
                     ("free", "idle"))


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
    """ClusterState from :func:`parse_pbsnodes`, :func:`parse_qstat_jobs` and :func:`parse_qstat_queues`."""
    queue_names = list(queues) or list(configured_queues)
    records = []
    for node in nodes.values():
        state = node_state(node)
        total, assigned = node.ncpus, min(node.ncpus_assigned, node.ncpus)
        serves = [node.queue] if node.queue else (node.qlist or list(configured_queues) or queue_names)
        unavailable = state in UNAVAILABLE_NODE_STATES
        records.append(Node(
            name=node.name, partitions=serves, state=state, cpus=total, cpus_allocated=assigned,
            cpus_idle=0 if unavailable else total - assigned, cpus_other=total - assigned if unavailable else 0,
            unavailable_since=node.last_state_change if unavailable else None))
    job_records = []
    for job in jobs.values():
        state = SHARED_JOB_STATES.get(job.state, job.state.lower())
        job_records.append(Job(partition=job.queue, state=state, user=job.user, cpus=job.ncpus,
                               reason=reason_label(job) if state == "pending" else "",
                               nodes=list(job.hosts) if state != "pending" else []))
    partitions_up = {}
    for name, attrs in queues.items():
        partitions_up[name] = all((attrs.get(key) or ["False"])[0] == "True" for key in ("enabled", "started"))
    return ClusterState(nodes=records, jobs=job_records, partitions_up=partitions_up)


# --- qmgr's print output and the server's accounting log, for the audit ---------------------------------

# One entry of an entity limit as qmgr prints it: [u:PBS_GENERIC=4], [u:alice=8], [o:PBS_ALL=16]
ENTITY_LIMIT = re.compile(r"\[(?P<kind>[ugpo]):(?P<name>[^=\]]+)=(?P<value>[^\]]+)\]")


def entity_limits(values):
    """``["[o:PBS_ALL=8]", "[u:PBS_GENERIC=4]"]`` -> ``{("o", "PBS_ALL"): "8", ("u", "PBS_GENERIC"): "4"}``."""
    found = {}
    for value in values or []:
        for match in ENTITY_LIMIT.finditer(str(value)):
            found[(match["kind"], match["name"].strip())] = match["value"].strip()
    return found


def qmgr_queues(print_server):
    """{queue: {attr[.res]: [values]}} from ``qmgr -c 'print server'``."""
    return pbsmodel.parse_print(print_server)["queues"]


def qmgr_sched(print_sched):
    """The default scheduler's attributes (else the only one's) from ``qmgr -c 'print sched'``."""
    scheds = pbsmodel.parse_print(print_sched)["sched"] if print_sched else {}
    return scheds.get("default") or (next(iter(scheds.values())) if scheds else {})


def record_fields(message):
    """``user=alice queue=burst project="a b" Resource_List.ncpus=1`` -> dict (values may hold '=')."""
    try:
        tokens = shlex.split(message, posix=True)
    except ValueError:
        tokens = message.split()
    fields = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def accounting_records(text):
    """Records of a PBS accounting log: ``MM/DD/YYYY HH:MM:SS;TYPE;ID;key=value ...``."""
    records = []
    for line in (text or "").splitlines():
        parts = line.split(";", 3)
        if len(parts) < 4:
            continue
        stamp, kind, job_id, message = parts
        try:
            when = datetime.strptime(stamp.strip(), "%m/%d/%Y %H:%M:%S")
        except ValueError:
            continue
        records.append({"time": when, "type": kind, "id": job_id, "fields": record_fields(message)})
    return records


def _epoch(value):
    number = parse_int(value)
    return datetime.fromtimestamp(number) if number else None  # local time, as the log's own stamps


def accounting_runs(text):
    """Job runs from the accounting log, each {user, partition, start, end, cpus, preempted}.

    ``E`` ends a run, ``R`` ends one that was requeued (preempted, ``qrerun``); both carry the run's
    user, queue, start and resources. An ``S`` without a later ``E``/``R`` is a run still going (end None).
    """
    started, found = {}, []
    for record in sorted(accounting_records(text), key=lambda r: r["time"]):
        fields = record["fields"]
        if record["type"] not in ("S", "E", "R"):
            continue
        run = {"user": fields.get("user", ""), "partition": fields.get("queue", ""),
               "start": _epoch(fields.get("start")), "cpus": parse_int(fields.get("Resource_List.ncpus")) or 0,
               "job_id": record["id"]}
        if record["type"] == "S":
            started[record["id"]] = run
            continue
        started.pop(record["id"], None)
        run["end"] = _epoch(fields.get("end")) or record["time"]
        run["preempted"] = record["type"] == "R"
        found.append(run)
    for run in started.values():
        run.update(end=None, preempted=False)
        found.append(run)
    return sorted(found, key=lambda r: (r["start"] or datetime.min, r["job_id"]))
