"""The interface between a batch system and the exporter's metrics.

The exporter is split in two so that every batch system yields the same metric names:

* a **source** (one per batch system) reads the scheduler with as few calls as possible and
  returns the scheduler adapter's plain records (:mod:`daskhpc.scheduler`) -- ``ClusterState``
  (nodes and jobs), ``Preemption`` events -- and optional scheduler-specific health metric families;
* :class:`daskhpc.exporter.collectors.BatchCollector` turns those records into the
  ``daskhpc_*`` metrics, caches them and throttles the source.

To add a batch system (the PBS source does this), parse its output in
``daskhpc/scheduler/<scheduler>.py``, subclass :class:`BatchSource` in
``daskhpc/exporter/<scheduler>.py``, implement :meth:`~BatchSource.read_state`, and optionally
:meth:`~BatchSource.read_preemptions` and :meth:`~BatchSource.read_health`, then add the class to
``SOURCES`` in ``daskhpc/exporter/server.py`` under the site model's ``scheduler`` value. Sources run
every command through :meth:`BatchSource.run`, which bounds it by ``command_timeout_seconds`` and by what
is left of the scrape's budget (``deadline``, set by the collector), and raise
:class:`daskhpc.scheduler.BatchError` (with a ``reason``) when the scheduler cannot be read; the
collector then leaves that source's metrics out, reports ``daskhpc_up 0`` and
``daskhpc_source_up{source,reason}``, counts the error, and the exporter keeps serving.
"""

from __future__ import annotations

import abc
import os
import shutil
import time

from daskhpc.core import command
from daskhpc.scheduler import BatchError, ClusterState


class BatchSource(abc.ABC):
    """Reads one batch system. Subclasses must not make one call per node or per job."""

    #: value of the site model's ``scheduler`` field this source serves
    scheduler = ""

    def __init__(self, config):
        self.config = config
        #: directory of the scheduler's commands; empty: found on PATH
        self.bin_dir = ""
        #: seconds one command may take
        self.timeout = float(config.get("command_timeout_seconds", 5))
        #: time.monotonic() by which the current scrape must be done (set by the collector), or None
        self.deadline = None
        #: last run time of each command in seconds, for daskhpc_batch_command_duration_seconds
        self.durations = {}

    def command_path(self, name):
        if self.bin_dir:
            return os.path.join(self.bin_dir, name)
        return shutil.which(name) or name

    def run(self, name, *args):
        """Standard output of one scheduler command, within the timeout and the scrape's budget."""
        started = time.monotonic()
        try:
            return self.runner([self.command_path(name), *args])
        finally:
            self.durations[name] = time.monotonic() - started

    def runner(self, argv):
        """Runs argv (sources may replace it, e.g. with recorded output in tests)."""
        timeout = self.timeout
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
        name = os.path.basename(argv[0])
        if timeout <= 0:
            raise BatchError("%s not run: the scrape's time budget is spent" % name, "budget")
        rc, out, err = command.run(argv, timeout)
        if rc == command.TIMED_OUT:
            raise BatchError("%s gave no answer within %.1fs (killed)" % (name, timeout), "timeout")
        if rc == command.NOT_FOUND:
            raise BatchError("%s not found: install the scheduler's client commands or set the bin dir"
                             % argv[0], "not_found")
        if rc != 0:
            raise BatchError("%s exited %d: %s" % (name, rc, (err or out).strip()[:500]), "failed")
        return out

    @abc.abstractmethod
    def read_state(self) -> ClusterState:
        """Nodes and jobs (including recently finished ones), in at most a couple of calls."""

    def read_preemptions(self, since: float, until: float) -> list:
        """Jobs preempted between `since` and `until` (epoch seconds) from the accounting records.

        Called on the slower accounting interval with overlapping windows; the collector
        de-duplicates events by (job_id, time). Return [] if the batch system keeps no such record.
        """
        return []

    def read_health(self) -> list:
        """Scheduler-specific health metric families (prometheus_client Metric objects)."""
        return []
