"""``BurstCluster`` on PBS: dask-jobqueue's ``PBSCluster`` with the same policy enforcement as on SLURM.

``daskhpc.cluster.BurstCluster()`` returns a :class:`PBSBurstCluster` when the site configuration says
``scheduler: pbs`` (``daskhpc.cluster.SCHEDULER_CLASSES``). What it fixes in every job script:

* ``#PBS -q <burst queue>`` and ``#PBS -A <burst account>``: the queue's ACLs and limits are the real
  guard; ``queue=``, ``account=``/``project=`` and directives ``-q``, ``-A``, ``-P``, ``-W group_list``
  are refused;
* ``#PBS -r y``: jobs are rerunnable, so the scheduler's ``preempt_order`` R requeues them (``-r n`` is
  refused);
* ``#PBS -l walltime=`` within the burst queue's ``resources_max.walltime``; ``-l walltime``,
  ``-l select``, ``-l place`` and ``-l preempt_targets`` in extra directives are refused (cores, memory
  and walltime go through the keyword arguments, which the policy checks), and so is ``resource_spec``.

On preemption PBS's MoM sends SIGTERM, waits the queue's ``kill_delay`` (the site model's grace time) and
sends SIGKILL; ``daskhpc.worker`` retires gracefully on SIGTERM, then the job is requeued and the
cluster's job-state sync (``PbsBatch``) sees it queued again.
"""

from __future__ import annotations

import shlex

from dask_jobqueue.pbs import PBSCluster, PBSJob

from daskhpc.cluster import BurstClusterBase, BurstJobMixin, PolicyError
from daskhpc.model.pbs import format_time
from daskhpc.pbs import PbsBatch

# qsub options that would move a job out of the burst policy -> what they change
REFUSED_FLAGS = {"-q": "queue", "-A": "account", "-P": "project", "-r": "rerunnable flag (must stay y)"}
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
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        flag, attached = token[:2], token[2:]
        if not token.startswith("-") or token.startswith("--"):
            continue
        if flag in REFUSED_FLAGS:
            return REFUSED_FLAGS[flag]
        if flag in ("-l", "-W"):
            spec = attached or following
            table = REFUSED_RESOURCES if flag == "-l" else REFUSED_W
            for item in spec.split(","):
                name = item.split("=", 1)[0].strip()
                if name in table:
                    return table[name]
    return None


class BurstPBSJob(BurstJobMixin, PBSJob):
    batch_cls = PbsBatch

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._burst_init()


class PBSBurstCluster(BurstClusterBase, PBSCluster):
    """BurstCluster on PBS: burst queue and account fixed, rerunnable jobs, walltime within policy."""

    job_cls = BurstPBSJob
    batch_cls = PbsBatch
    directive_prefix = "#PBS"
    policy_options = {"-q": "queue", "-A": "account", "-P": "project"}

    def __init__(self, workers=0, *, job_extra_directives=None, job_script_prologue=None, **kwargs):
        if kwargs.get("resource_spec") is not None:
            raise PolicyError("resource_spec=%r: burst jobs request one chunk built from cores= and memory=, "
                              "which the site's burst policy checks. Remove resource_spec." % kwargs["resource_spec"])
        kwargs.pop("resource_spec", None)
        for where, lines in (("job_extra_directives", job_extra_directives),
                             ("job_script_prologue", job_script_prologue)):
            for line in lines or []:
                if where == "job_script_prologue" and not str(line).strip().startswith("#"):
                    continue  # a command, not a directive
                what = refused_pbs_directive(line)
                if what:
                    raise PolicyError("%s %r would change the %s: burst jobs always run in queue %s with "
                                      "account %s, rerunnable, within the burst walltime (the site's burst "
                                      "policy). Remove it." % (where, str(line), what, self._site_queue(kwargs),
                                                               self._site_account(kwargs)))
        super().__init__(workers, job_extra_directives=job_extra_directives,
                         job_script_prologue=job_script_prologue, **kwargs)

    @staticmethod
    def _site_queue(kwargs):
        from daskhpc import config as site

        return (kwargs.get("config") or site.site_config()).get("partition")

    @staticmethod
    def _site_account(kwargs):
        from daskhpc import config as site

        return (kwargs.get("config") or site.site_config()).get("account")

    def policy_job_kwargs(self, walltime_minutes, signal_margin, job_extra_directives):
        policy = self.policy
        # PBS has no --signal: workers retire before walltime through --lifetime (set by the base
        # class), and on preemption MoM's SIGTERM (kill_delay before SIGKILL) makes them retire.
        return {
            "queue": policy.partition,
            "account": policy.account,
            "walltime": format_time(int(round(walltime_minutes * 60))),
            "job_extra_directives": ["-r y"] + job_extra_directives,
        }

    def policy_directive_lines(self, job_kwargs):
        return ["#PBS -q %s" % job_kwargs["queue"], "#PBS -A %s" % job_kwargs["account"],
                "#PBS -l walltime=%s" % job_kwargs["walltime"]]
