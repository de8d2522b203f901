"""Data scientists' scripts on the login host, and what root sees of their jobs on ctl.

Scripts run through conftest's ``user_script`` fixture: copied into a fresh directory in the
user's (shared) home over SSH and run there as the user with the site's Python
(/opt/daskhpc/venv/bin/python), as a data scientist who logged in would. They talk to the test
through their output (``EVENT name json`` lines while they run, one ``RESULT json`` line at the
end); the test answers with marker files in their directory (``script.mark("preempted")``).
"""

from __future__ import annotations

import json

from conftest import UserScript, sh

USER = "alice"
PYTHON = UserScript.python

PREAMBLE = r'''
import json, os, sys, time, traceback
from pathlib import Path
HERE = Path(sys.argv[1])
os.chdir(HERE)  # batch jobs write their default output files here, not all over the home directory
def report(**values):
    print("RESULT " + json.dumps(values), flush=True)
def event(name, value=None):
    print("EVENT " + name + " " + json.dumps(value), flush=True)
def wait_for(name, timeout):
    deadline = time.time() + timeout
    while not (HERE / name).exists():
        if time.time() > deadline:
            raise TimeoutError("the test never wrote " + name)
        time.sleep(0.5)
'''


def result_of(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, "client script failed (rc=%d):\n%s\n%s" % (
        proc.returncode, proc.stdout[-3000:], proc.stderr[-6000:])
    return json.loads(lines[-1][len("RESULT "):])


def squeue(*args):
    """squeue on the controller, without its header."""
    return sh("squeue", "--noheader", *args).stdout


def nodes_of(jobs):
    """{node: [job ids]} of running jobs."""
    by_node = {}
    for job_id in jobs:
        node = squeue("--jobs=" + job_id, "--format=%N").strip()
        by_node.setdefault(node, []).append(job_id)
    return by_node


def node_state(node):
    """The node's state as sinfo prints it (idle, mixed, allocated, idle*, down*, ...)."""
    return sh("sinfo", "--noheader", "--Node", "--nodes=" + node, "--format=%T").stdout.split()[0]


def cluster_job_ids(user=USER, partition="burst"):
    """The user's jobs in the partition, in any state squeue shows."""
    return squeue("--user=" + user, "--partition=" + partition, "--states=all", "--format=%i").split()
