"""``BurstCluster`` on PBS: dask-jobqueue's ``PBSJob`` with the same policy enforcement as on SLURM.

``BurstCluster()`` takes :class:`BurstPBSJob` as its job class when the site configuration says
``scheduler: pbs`` (``daskhpc.cluster.base.SCHEDULER_CLASSES``). What it fixes in every job script:

* ``#PBS -q <burst queue>`` and ``#PBS -A <burst account>``: the queue's ACLs and limits are the real
  guard; ``queue=``, ``account=``/``project=`` and directives ``-q``, ``-A``, ``-P``, ``-W group_list``
  are refused (also bundled, e.g. ``-hq prod``), and qsub runs without ``PBS_*`` variables;
* ``#PBS -r y``: jobs are rerunnable, so the scheduler's ``preempt_order`` R requeues them (``-r n`` is
  refused);
* ``#PBS -l walltime=`` within the burst queue's ``resources_max.walltime``; ``-l walltime``,
  ``-l select``, ``-l place`` and ``-l preempt_targets`` in extra directives are refused (cores, memory
  and walltime go through the keyword arguments, which the policy checks), and so is ``resource_spec``;
* ``#PBS -o <dir>/`` and ``#PBS -e <dir>/``: the user's private log directory (``-o``/``-e`` and job
  arrays ``-J`` are refused).

On preemption PBS's MoM sends SIGTERM, waits the queue's ``kill_delay`` (the site model's grace time) and
sends SIGKILL; ``daskhpc.worker`` retires gracefully on SIGTERM, then the job is requeued and the
cluster's job-state sync (``PbsBatch``) sees it queued again.
"""

from __future__ import annotations

from dask_jobqueue.pbs import PBSJob, pbs_format_bytes_ceil

from daskhpc.cluster.base import BurstCluster, BurstJobMixin, PolicyError, directive_tokens
from daskhpc.core.pbs import format_time
from daskhpc.scheduler.pbs import PbsBatch, pbs_command

# qsub options that would move a job out of the burst policy -> what they change
REFUSED_FLAGS = {"-q": "queue", "-A": "account", "-P": "project", "-r": "rerunnable flag (must stay y)",
                 "-o": "log files", "-e": "log files", "-J": "number of jobs (job array)"}
# qsub's short options without an argument: in a bundle such as -hq prod the next letter is an option.
FLAG_LETTERS = "hIVzXf"
# -l resources the policy sets itself
REFUSED_RESOURCES = {"walltime": "walltime (use walltime=)", "select": "chunk request (use cores= and memory=)",
                     "place": "placement", "preempt_targets": "preemption targets", "nodes": "node request"}
# -W attributes that change who the job runs as or is accounted to
REFUSED_W = {"group_list": "group (accounting and ACL)", "run_as_user": "user"}


def refused_pbs_directive(line):
    """What a PBS directive (with or without '#PBS') would change against policy, or None."""
    text = str(line).strip()
    if text.startswith("#"):
        if not text.startswith("#PBS"):
            return None
        text = text[len("#PBS"):]
    tokens = directive_tokens(text)
    for index, token in enumerate(tokens):
        if not token.startswith("-") or token.startswith("--"):
            continue
        for position, letter in enumerate(token[1:], start=2):  # bundles: -hq prod
            flag = "-" + letter
            if flag in REFUSED_FLAGS:
                return REFUSED_FLAGS[flag]
            if flag in ("-l", "-W"):
                spec = token[position:] or (tokens[index + 1] if index + 1 < len(tokens) else "")
                table = REFUSED_RESOURCES if flag == "-l" else REFUSED_W
                for item in spec.split(","):
                    name = item.split("=", 1)[0].strip()
                    if name in table:
                        return table[name]
            if letter not in FLAG_LETTERS:
                break  # an option with an argument: the rest of the token is its value
    return None


class BurstPBSJob(BurstJobMixin, PBSJob):
    batch_cls = PbsBatch
    directive_prefix = "#PBS"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # By absolute path from /etc/pbs.conf: qsub and qdel are on PATH only in login shells.
        self.submit_command = pbs_command("qsub")
        self.cancel_command = pbs_command("qdel")

    @staticmethod
    def refuse_cluster_kwargs(kwargs):
        if kwargs.get("resource_spec") is not None:
            raise PolicyError("resource_spec=%r: burst jobs request one chunk built from cores= and memory=, "
                              "which the site's burst policy checks. Remove resource_spec." % kwargs["resource_spec"])
        kwargs.pop("resource_spec", None)

    @staticmethod
    def refused_field(text):
        return refused_pbs_directive(text)

    @staticmethod
    def policy_job_kwargs(policy, *, walltime_minutes, signal_margin, cores, memory, log_directory):
        # PBS has no --signal: workers retire before walltime through --lifetime (set by the cluster),
        # and on preemption MoM's SIGTERM (kill_delay before SIGKILL) makes them retire.
        return {
            "queue": policy.partition,
            "account": policy.account,
            "walltime": format_time(int(round(walltime_minutes * 60))),
            # Given here so that dask-jobqueue's jobqueue.pbs.resource-spec setting cannot apply.
            "resource_spec": "select=1:ncpus=%d:mem=%s" % (cores, pbs_format_bytes_ceil(memory)),
            # Rerunnable, and logs in the user's private directory, never the working directory.
            "job_extra_directives": ["-r y", "-o %s/" % log_directory, "-e %s/" % log_directory],
        }

    @staticmethod
    def policy_directive_lines(job_kwargs, cores, memory):
        return ["#PBS -q %s" % job_kwargs["queue"], "#PBS -A %s" % job_kwargs["account"],
                "#PBS -l %s" % job_kwargs["resource_spec"], "#PBS -l walltime=%s" % job_kwargs["walltime"]]


class PBSBurstCluster(BurstCluster):
    """BurstCluster on PBS whatever the site's scheduler: burst queue and account fixed, rerunnable jobs."""

    job_cls = BurstPBSJob
