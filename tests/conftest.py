"""Shared fixtures: run the project's own playbooks and talk to the lab's hosts over SSH.

The lab is a small site of Debian 12 hosts booted with systemd under systemd-nspawn
(lab/nspawn_lab.py, inventories/lab/hosts.yml). Tests reach them the way people do:

* ``sh(..., user="alice")`` logs in to the login host as a directory user (her own SSH key)
  and runs the command there; ``sh(...)`` without a user runs it as root on a host
  (default ``ctl``, where SLURM's admin commands live).
* ``read_file(host, path)`` reads a file on the host that has it.
* ``lab_hosts`` is pytest-ansible's host manager on the lab inventory, for reading host
  state with Ansible's modules: ``lab_hosts["svc"].stat(path=...)["svc"]["stat"]``.

Nothing here assumes that a daemon, a file or a user lives on the machine running pytest.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# DASKHPC_LAB_INVENTORY=inventories/lab-pbs points the session at the PBS lab (make test-pbs).
LAB_INVENTORY = REPO / os.environ.get("DASKHPC_LAB_INVENTORY", "inventories/lab")
LAB_HARNESS = REPO / "lab" / "nspawn_lab.py"
LAB_DIR = Path(os.environ.get("DASKHPC_LAB_DIR", "/var/lib/daskhpc-lab"))
SSH_DIR = LAB_DIR / "ssh"
ROOT_KEY = SSH_DIR / "id_ed25519"
with open(LAB_INVENTORY / "hosts.yml", encoding="utf-8") as _fh:
    _VARIANT = yaml.safe_load(_fh)["all"]["vars"]["lab_nspawn"].get("variant")  # lab/nspawn_lab.py's suffix
# One lock per lab (the Makefile's LAB_LOCK): /tmp/daskhpc-lab.lock for the SLURM lab,
# /tmp/daskhpc-lab-pbs.lock for the PBS lab, whose hosts are disjoint from the SLURM lab's.
LOCK_PATH = "/tmp/daskhpc-lab%s.lock" % ("-" + _VARIANT if _VARIANT else "")
KNOWN_HOSTS = SSH_DIR / ("known_hosts-" + _VARIANT if _VARIANT else "known_hosts")
USER_KEYS = SSH_DIR / "users"  # made by playbooks/lab.yml, one key pair per directory user
SSH_OPTIONS = ["-o", "UserKnownHostsFile=%s" % KNOWN_HOSTS, "-o", "StrictHostKeyChecking=yes",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8"]
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def inventory_hosts():
    """{host name: address} from the lab inventory (the same file the harness boots the hosts from)."""
    with open(LAB_INVENTORY / "hosts.yml", encoding="utf-8") as fh:
        inventory = yaml.safe_load(fh)["all"]
    hosts = {}

    def walk(group):
        for name, hostvars in (group.get("hosts") or {}).items():
            if hostvars and "ansible_host" in hostvars:
                hosts[name] = hostvars["ansible_host"]
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(inventory)
    return hosts


def inventory_group(name):
    """Host names of an inventory group (children included), in inventory order."""
    with open(LAB_INVENTORY / "hosts.yml", encoding="utf-8") as fh:
        inventory = yaml.safe_load(fh)["all"]

    def find(group, inside):
        found = []
        for host in (group.get("hosts") or {}) if inside else ():
            found.append(host)
        for child_name, child in (group.get("children") or {}).items():
            found += find(child or {}, inside or child_name == name)
        return found

    return list(dict.fromkeys(find(inventory, name == "all")))


HOSTS = inventory_hosts()
# ctl (the PBS lab: pbs): the scheduler's admin commands (scontrol, sacctmgr, squeue; qmgr, qstat)
DEFAULT_ROOT_HOST = (inventory_group("slurm_controller") or inventory_group("pbs_server"))[0]
DEFAULT_USER_HOST = inventory_group("login")[0]             # login: where users work and run Dask schedulers


def address(host):
    try:
        return HOSTS[host]
    except KeyError:
        raise AssertionError("%r is not a lab host (inventory: %s)" % (host, ", ".join(sorted(HOSTS)))) from None


@dataclass
class PlaybookRun:
    rc: int
    output: str
    recap: dict

    @property
    def changed(self):
        return sum(host["changed"] for host in self.recap.values())

    @property
    def failed(self):
        return sum(host["failed"] + host["unreachable"] for host in self.recap.values())


def ansible_env(**extra):
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update(
        PATH=venv_bin + os.pathsep + env.get("PATH", ""),
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PYTHONPATH=str(REPO / ".collections"),
    )
    env.update(extra)
    return env


def run_playbook(playbook, *args, inventory=LAB_INVENTORY, extra_vars=None, env=None, timeout=1800):
    """Run one of the project's playbooks (path relative to playbooks/ or absolute) and parse its recap."""
    path = Path(playbook)
    if not path.is_absolute():
        path = REPO / "playbooks" / playbook
    argv = ["ansible-playbook", "-i", str(inventory), str(path), *args]
    for key, value in (extra_vars or {}).items():
        argv += ["-e", "%s=%s" % (key, value)]
    proc = subprocess.run(argv, cwd=REPO, env=ansible_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout, check=False)
    output = proc.stdout + proc.stderr
    recap = {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
             for m in RECAP_RE.finditer(output)}
    return PlaybookRun(proc.returncode, output, recap)


# --- the lab: one per machine, held for the whole session -----------------------------------


class LabLock:
    """flock on LOCK_PATH: this session's lab (the Makefile's lab targets take the same lock)."""

    def __init__(self, path=LOCK_PATH):
        self.path = path
        self._fh = None

    def acquire(self):
        if os.environ.get("DASKHPC_LAB_LOCKED"):  # the caller (.ci/run) holds the locks for the whole run
            return self
        self._fh = open(self.path, "w")  # noqa: SIM115
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def release(self):
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def harness(*args, timeout=3600):
    """lab/nspawn_lab.py (up, status, cut/restore HOST, stop/start HOST) on this machine."""
    proc = subprocess.run([sys.executable, str(LAB_HARNESS), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, "nspawn_lab.py %s failed (rc=%d):\n%s%s" % (
        " ".join(args), proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="session")
def lab():
    """The lab's hosts up (lab/nspawn_lab.py up) and converged through playbooks/lab.yml.

    The lab lock is held from here to the end of the session, so no converge (`make lab`,
    another test session) changes the hosts under the tests.
    """
    lock = LabLock().acquire()
    try:
        harness("up")
        if os.environ.get("DASKHPC_LAB_CONVERGED"):  # the caller converged it in this lock hold
            yield None
            return
        run = run_playbook("lab.yml")
        assert run.rc == 0 and run.failed == 0, "lab converge failed:\n" + run.output[-6000:]
        yield run
    finally:
        lock.release()


@pytest.fixture(scope="session")
def lab_site():
    """The lab's site model as written in the inventory."""
    with open(LAB_INVENTORY / "group_vars" / "all" / "site.yml") as fh:
        return yaml.safe_load(fh)["daskhpc_site"]


@pytest.fixture
def lab_hosts(lab, ansible_adhoc):
    """pytest-ansible's host manager on the lab inventory (modules run on the named hosts over SSH).

        lab_hosts["svc"].stat(path="/etc/daskhpc/ca")["svc"]["stat"]["mode"]
        adhoc(lab_hosts, "all", "stat", path="/etc/sssd/sssd.conf")   # {host: result}
    """
    with warnings.catch_warnings():
        # pytest-ansible marks its host manager deprecated (pytest-ansible#468); ansible_adhoc is what it offers.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ansible_adhoc(inventory=str(LAB_INVENTORY), connection="ssh")


def adhoc(lab_hosts, pattern, module, allow_failure=False, **args):
    """Run one module on the hosts matching `pattern`; {host: result dict}. Fails the test on a failed host."""
    with warnings.catch_warnings():
        # Each ad hoc run initialises Ansible's plugin loader again, which warns that it already was.
        warnings.filterwarnings("ignore", "AnsibleCollectionFinder has already been configured")
        results = getattr(lab_hosts[pattern], module)(**args)
    out = {host: dict(results[host]) for host in results.keys()}
    if not allow_failure:
        failed = {h: r.get("msg") or r.get("stderr") or r for h, r in out.items() if r.get("failed")}
        assert not failed, "%s failed on %s" % (module, failed)
    return out


# --- commands on the hosts ------------------------------------------------------------------


def ssh_argv(user=None, host=None):
    """ssh to `host` as root (default ctl) or as a directory user with their own key (default login)."""
    host = host or (DEFAULT_USER_HOST if user else DEFAULT_ROOT_HOST)
    key = USER_KEYS / user if user else ROOT_KEY
    if user and not key.exists():
        raise AssertionError("no SSH key for %s at %s: playbooks/lab.yml makes them" % (user, key))
    return ["ssh", "-i", str(key), *SSH_OPTIONS, "%s@%s" % (user or "root", address(host))]


def remote_command(argv, env=None):
    command = shlex.join([str(a) for a in argv])
    if env:
        command = "env %s %s" % (shlex.join("%s=%s" % item for item in env.items()), command)
    return command


def sh(*argv, user=None, host=None, check=True, timeout=120, input=None, env=None):
    """Run a command on a lab host over SSH; return the CompletedProcess (text).

    With `user`, as that directory user logged in on the login host (or `host`); without, as root
    on `host` (default ctl). `env` adds variables for the command. The command's working
    directory is the login's home directory.
    """
    proc = subprocess.run([*ssh_argv(user, host), remote_command(argv, env)], capture_output=True, text=True,
                          timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s on %s as %s failed (rc=%d):\n%s%s" % (
            shlex.join([str(a) for a in argv]), host or (DEFAULT_USER_HOST if user else DEFAULT_ROOT_HOST),
            user or "root", proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc


def changed_tasks(output):
    """Each task of a playbook's output that changed something, with the hosts it changed."""
    task, found = None, []
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line.rstrip(" *")
        elif line.startswith("changed:") and task:
            found.append("%s\n  %s" % (task, line))
    return "\n".join(found) or output[-6000:]


def read_file(host, path):
    """The bytes of `path` on `host` (read as root)."""
    proc = subprocess.run([*ssh_argv(None, host), remote_command(["cat", "--", path])], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace")
        if "No such file" in message:
            raise FileNotFoundError("%s:%s" % (host, path))
        raise AssertionError("reading %s:%s failed: %s" % (host, path, message))
    return proc.stdout


def write_file(path, content, user=None, host=None, mode="0644"):
    """Write `content` to `path` on a lab host, as `user` (on login by default) or as root."""
    sh("sh", "-c", 'umask 077 && cat > "$1" && chmod "$2" "$1"', "write_file", path, mode, user=user, host=host,
       input=content)


class Spawned:
    """A command started over SSH in the background, its output collected as it comes.

    The remote shell prints its pid and then execs the command, so `pid` is the command's
    process id on the host (to signal it there: sh("kill", "-9", str(p.pid), host=...)).
    """

    def __init__(self, *argv, user=None, host=None, stdin=False, env=None):
        self.host = host or (DEFAULT_USER_HOST if user else DEFAULT_ROOT_HOST)
        self.user = user
        command = "echo $$ && exec " + remote_command(argv, env)
        self.proc = subprocess.Popen([*ssh_argv(user, self.host), command],
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        first = self.proc.stdout.readline()
        if not first.strip().isdigit():
            rest = self.proc.communicate(timeout=30)
            raise AssertionError("could not start %s on %s: %s%s%s" % (argv, self.host, first, *rest))
        self.pid = int(first)
        self.out, self.err = [], []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines):
        for line in stream:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def running(self):
        return self.proc.poll() is None

    def wait_for_line(self, prefix, timeout):
        """The first stdout line starting with `prefix` (without it), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.out:
                    if line.startswith(prefix):
                        return line[len(prefix):].strip()
                if not any(r.is_alive() for r in self._readers):
                    raise AssertionError("%s ended without printing %r (rc=%s):\n%s\n%s" % (
                        self.proc.args[-1], prefix, self.proc.poll(), "".join(self.out)[-3000:],
                        "".join(self.err)[-6000:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %r from the command after %ss:\n%s\n%s" % (
                        prefix, timeout, "".join(self.out)[-3000:], "".join(self.err)[-6000:]))
                self._changed.wait(min(left, 1.0))

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def finish(self, timeout):
        """Wait for the command to end; a CompletedProcess with everything it printed."""
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(30)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, "".join(self.out), "".join(self.err))

    def stop(self):
        """End the command on the host (SIGTERM, then SIGKILL) and the local ssh; safe to call twice."""
        if self.running():
            sh("sh", "-c", 'kill -TERM "$1" 2>/dev/null; sleep 5; kill -KILL "$1" 2>/dev/null; true', "stop",
               str(self.pid), host=self.host, check=False, timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class UserScript:
    """A Python script run as a directory user on the login host, from its own directory in their home.

    The script is copied there over SSH and run with the site's Python as `python script.py DIR`.
    It reports through its output (`EVENT name json` lines while it runs, see `event`); the test
    answers by creating marker files in DIR (`mark`).
    """

    python = "/opt/daskhpc/venv/bin/python"

    def __init__(self, user):
        self.user = user
        self.dir = user_tmpdir(user, "daskhpc-it-")
        self.proc = None

    def path(self, name):
        return "%s/%s" % (self.dir, name)

    def start(self, text):
        write_file(self.path("script.py"), text, user=self.user)
        self.proc = Spawned(self.python, self.path("script.py"), self.dir, user=self.user)
        return self.proc

    def run(self, text, timeout):
        """Run the script to its end; the CompletedProcess."""
        return self.start(text).finish(timeout)

    def event(self, name, timeout):
        """The value of the script's first `EVENT name json` line, waiting up to `timeout` seconds."""
        return json.loads(self.proc.wait_for_line("EVENT %s " % name, timeout))

    def mark(self, name):
        sh("touch", self.path(name), user=self.user)

    def close(self, keep=False):
        if self.proc is not None:
            self.proc.stop()
        if not keep:
            sh("rm", "-rf", self.dir, user=self.user, check=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


@pytest.fixture
def user_script(lab, request):
    """user_script("alice") -> a UserScript; stopped afterwards, its directory kept if the test failed."""
    made = []

    def make(user):
        made.append(UserScript(user))
        return made[-1]

    yield make
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    for script in made:
        if failed:
            print("kept %s on the login host (job logs: slurm-*.out)" % script.dir)
        script.close(keep=failed)


def wait_until(predicate, timeout, step=1.0):
    """Poll `predicate` until it returns something true (returned) or `timeout` seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(step)


def user_tmpdir(user, prefix):
    """A fresh directory in the user's (shared) home, made by the user on the login host."""
    return sh("mktemp", "-d", "--tmpdir=/home/%s" % user, prefix + "XXXXXX", user=user).stdout.strip()


def slurm_config(key):
    """One value of `scontrol show config` on the controller."""
    match = re.search(r"^%s\s*=\s*(\S+)" % re.escape(key), sh("scontrol", "show", "config").stdout, re.MULTILINE)
    assert match, "scontrol show config has no %s" % key
    return match.group(1)
