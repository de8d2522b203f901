"""``BurstCluster`` on SLURM: the job class that puts burst jobs on the burst partition, QOS and account.

Partition, QOS and account are fixed, jobs are requeueable (preemption requeues them), and ``--signal``
tells the worker to retire before walltime and when preemption's GraceTime starts.
"""

from __future__ import annotations

from dask_jobqueue.slurm import SLURMJob, slurm_format_bytes_ceil

from daskhpc.cluster.base import BurstCluster, BurstJobMixin, refused_option_field
from daskhpc.core.site_model import format_slurm_minutes
from daskhpc.scheduler.slurm import SlurmBatch

# sbatch options -> what they would change; user directives may set none of them.
POLICY_OPTIONS = {
    "-p": "partition", "--partition": "partition",
    "-q": "QOS", "--qos": "QOS",
    "-A": "account", "--account": "account",
    "-M": "cluster", "--clusters": "cluster",
    "--reservation": "reservation",
    "-c": "cores", "--cpus-per-task": "cores", "-n": "cores", "--ntasks": "cores", "-N": "cores",
    "--nodes": "cores", "--ntasks-per-node": "cores", "--exclusive": "cores",
    "--mem": "memory", "--mem-per-cpu": "memory", "--mem-per-gpu": "memory",
    "-t": "walltime", "--time": "walltime",
    "-a": "number of jobs", "--array": "number of jobs",
    "-o": "log files", "--output": "log files", "-e": "log files", "--error": "log files",
}
# sbatch's short options without an argument: in a bundle such as -Hp prod the next letter is an option.
FLAG_LETTERS = "hHkOQsuvVW"


class BurstSLURMJob(BurstJobMixin, SLURMJob):
    batch_cls = SlurmBatch
    directive_prefix = "#SBATCH"

    @staticmethod
    def refused_field(text):
        return refused_option_field(text, POLICY_OPTIONS, FLAG_LETTERS)

    @staticmethod
    def error_log(log_directory, job_id):
        return "%s/dask-worker-%s.err" % (log_directory, job_id)  # as --error= in policy_job_kwargs

    @staticmethod
    def policy_job_kwargs(policy, *, walltime_minutes, signal_margin, cores, memory, log_directory):
        return {
            "queue": policy.partition,
            "account": policy.account,
            "walltime": format_slurm_minutes(walltime_minutes),
            # Given here so that dask-jobqueue's jobqueue.slurm.job-cpu/job-mem settings cannot apply.
            "job_cpu": cores,
            "job_mem": slurm_format_bytes_ceil(memory),
            "job_extra_directives": [
                "--qos=%s" % policy.qos,
                # Preemption requeues the job (PreemptMode=REQUEUE needs requeueable jobs).
                "--requeue",
                # SIGTERM to the worker (B: the batch step, which the worker exec'd into) before walltime;
                # with PreemptParameters=send_user_signal (SLURM >= 23.02) also when preemption's GraceTime starts.
                "--signal=B:TERM@%d" % signal_margin,
                # Absolute paths in the user's private directory, never the working directory.
                "--output=%s/dask-worker-%%j.out" % log_directory,
                "--error=%s/dask-worker-%%j.err" % log_directory,
            ],
        }

    @staticmethod
    def policy_directive_lines(job_kwargs, cores, memory):
        return ["#SBATCH -p %s" % job_kwargs["queue"], "#SBATCH -A %s" % job_kwargs["account"], "#SBATCH -n 1",
                "#SBATCH --cpus-per-task=%d" % cores, "#SBATCH --mem=%s" % job_kwargs["job_mem"],
                "#SBATCH -t %s" % job_kwargs["walltime"]]


class SlurmBurstCluster(BurstCluster):
    """BurstCluster on SLURM whatever the site's scheduler: partition, QOS and account fixed, requeueable jobs."""

    job_cls = BurstSLURMJob
