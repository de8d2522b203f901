# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every external command the collection and the exporter run goes through :func:`run`: always bounded.

A batch system that hangs (slurmctld stopped with SIGSTOP, an NFS-stuck qmgr) must not hang an
Ansible run or a Prometheus scrape. The command runs in its own process group, without a shell,
with stdin closed; at the timeout the whole group is killed (a wrapper script's children too) and
the call returns :data:`TIMED_OUT`. Standard library only (the ``daskhpc`` package uses it too).
"""

from __future__ import annotations

import os
import signal
import subprocess

#: return codes for "no answer in time" and "no such command", as coreutils ``timeout`` and the shell use them
TIMED_OUT = 124
NOT_FOUND = 127
#: default seconds for commands run by the modules (sacctmgr, qmgr, ...)
DEFAULT_TIMEOUT = 60


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a descendant left the group and holds the pipes: stop reading
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        proc.wait()


def run(argv, timeout=DEFAULT_TIMEOUT, env=None):
    """``(rc, stdout, stderr)`` of *argv*; rc is :data:`TIMED_OUT` after *timeout* seconds (the
    process group is killed) and :data:`NOT_FOUND` when the program does not exist."""
    if timeout is None or timeout <= 0:
        return TIMED_OUT, "", "%s was not run: no time left (timeout %s)" % (argv[0], timeout)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True, env=env)
    except FileNotFoundError:
        return NOT_FOUND, "", "%s: command not found" % argv[0]
    except PermissionError as exc:
        return 126, "", "%s: %s" % (argv[0], exc.strerror)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return TIMED_OUT, "", "%s gave no answer within %gs and was killed" % (" ".join(argv), timeout)
    except BaseException:
        _kill_group(proc)
        raise
    return proc.returncode, out, err
