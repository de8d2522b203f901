"""Say what a cluster is waiting for: "8/16 workers, 8 jobs pending: Resources"."""

from __future__ import annotations

import html
import logging
import sys
import time
from collections import Counter

from daskhpc.scheduler import ENDING, PENDING, RUNNING, STUCK, SUSPENDED

logger = logging.getLogger("daskhpc.progress")

# The scheduler's pending reasons in words a data scientist can act on.
REASON_HINTS = {
    "Resources": "waiting for free cores",
    "Priority": "other jobs go first",
    "BeginTime": "requeued after preemption, waiting to restart",
    "QOSMaxCpuPerUserLimit": "your burst core limit is reached",
    "QOSMaxJobsPerUserLimit": "your burst job limit is reached",
    "QOSGrpCpuLimit": "the burst share of the cluster is in use",
    "AssocGrpCpuLimit": "your account's core limit is reached",
    "ReqNodeNotAvail": "nodes are down or reserved",
    "PartitionDown": "the burst partition is down",
    "Dependency": "waiting for another job",
    "JobHeldUser": "held by you",
    "JobHeldAdmin": "held by an administrator",
}


def summarize(connected, target, states, adaptive_maximum=None, waiting=0):
    """One line from the connected worker count, the target and the jobs' states (JobState or None).

    ``adaptive_maximum``: the most workers adapt() may ask for (None: a fixed size); ``waiting``: tasks that
    wait for a worker.
    """
    if adaptive_maximum is not None:
        most = "" if adaptive_maximum == float("inf") else ", at most %d" % adaptive_maximum
        parts = ["%d/%d workers (adaptive%s)" % (connected, target, most)]
        if not target and not connected and not waiting:
            parts[0] += ": workers are asked for when there is work"
    elif not target and not connected:
        parts = ["no workers: none asked for%s. Ask for some with cluster.scale(16) or cluster.adapt()"
                 % (" and %d tasks are waiting" % waiting if waiting else "")]
    else:
        parts = ["%d/%d workers" % (connected, target)]
    if connected > target:
        parts.append("%d leaving" % (connected - target))
    pending = Counter(s.reason or "queued" for s in states if s is not None and s.phase == PENDING)
    unknown = sum(1 for s in states if s is None)
    preempting = sum(1 for s in states if s is not None and s.preempting)
    running = sum(1 for s in states if s is not None and s.phase == RUNNING)
    other = Counter(s.state for s in states if s is not None and s.phase in (ENDING, STUCK, SUSPENDED))
    if pending:
        total = sum(pending.values())
        reasons = ", ".join(reason if len(pending) == 1 else "%s (%d)" % (reason, count)
                            for reason, count in pending.most_common())
        hints = [REASON_HINTS[r] for r in pending if r in REASON_HINTS]
        parts.append("%d job%s pending: %s%s" % (total, "" if total == 1 else "s", reasons,
                                                 " (%s)" % "; ".join(hints) if hints else ""))
    if running:
        parts.append("%d running" % running)
    if preempting:
        parts.append("%d being preempted (workers handing off their data)" % preempting)
    if unknown:
        parts.append("%d submitted" % unknown)
    for state, count in sorted(other.items()):
        parts.append("%d %s" % (count, state.lower()))
    return ", ".join(parts)


class Progress:
    """Prints the line when it changes (terminal) and renders it for Jupyter."""

    def __init__(self, enabled=True, stream=None, min_interval=1.0):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self.text = "starting"
        self._printed = None
        self._printed_at = 0.0

    def update(self, text):
        self.text = text
        if text == self._printed:
            return
        logger.info(text)
        now = time.monotonic()
        if self.enabled and not _in_notebook() and now - self._printed_at >= self.min_interval:
            print("[daskhpc] " + text, file=self.stream, flush=True)
            self._printed, self._printed_at = text, now

    def html(self):
        return "<p><strong>Burst status:</strong> %s</p>" % html.escape(self.text)


def _in_notebook():
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and shell.get_ipython().__class__.__name__ == "ZMQInteractiveShell"
    except Exception:
        return False
