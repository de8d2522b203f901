"""The workers' Python environment: does it agree with this client on what Dask needs? And users' own
environments built on the site's (``daskhpc venv ~/myenv``).

The scheduler lives in the client's process and the workers run ``python -m daskhpc.worker`` with the
workers' Python (the site's environment, or a user's own venv built on it). Tasks and results are pickled
between them, so a different dask, distributed, cloudpickle, msgpack, ... on one side fails late and
obscurely (a ``KilledWorker`` after the jobs ran, a deserialisation error in a worker log). This module
asks the workers' Python for its versions on the login host, before any job is submitted, and says what
to change when they differ.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import site
import subprocess
import sys
import sysconfig

# Must be identical on both sides: the wire protocol, serialisation and the worker entry point.
REQUIRED = ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "daskhpc")
# Data travels pickled in these formats: a different version on the workers may not read it, and a
# missing one fails the first task that needs it. Compared only when this client has them.
DATA = ("numpy", "pandas", "pyarrow")
PROBE_TIMEOUT = 60

# Run by the workers' Python: versions only, nothing imported that could fail (importlib.metadata).
PROBE = r"""
import importlib.metadata as m, json, platform, sys
def version(name):
    try:
        return m.version(name)
    except Exception:
        return None
print(json.dumps({"python": platform.python_version(), "executable": sys.executable,
                  "packages": {name: version(name) for name in sys.argv[1:]}}))
"""


class WorkerEnvironmentError(RuntimeError):
    """The workers' Python cannot run this client's workers (missing, broken, or other versions)."""


def local_versions(names=REQUIRED + DATA):
    """This process's Python and package versions (None for a package that is not installed)."""
    packages = {}
    for name in names:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "packages": packages}


def probe(python, timeout=PROBE_TIMEOUT, names=REQUIRED + DATA):
    """The versions the Python at ``python`` sees; WorkerEnvironmentError when it cannot say."""
    if not os.path.isabs(python):
        raise WorkerEnvironmentError("python=%r is not an absolute path" % python)
    if not os.access(python, os.X_OK):
        raise WorkerEnvironmentError("the workers' Python %s does not exist or is not executable" % python)
    try:
        # This process's environment, as the jobs get it from sbatch: PYTHONPATH and ~/.local count there too.
        done = subprocess.run([python, "-c", PROBE, *names], capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise WorkerEnvironmentError("the workers' Python %s did not say its versions within %d s (a hung shared "
                                     "file system?)" % (python, timeout)) from None
    if done.returncode != 0:
        raise WorkerEnvironmentError("the workers' Python %s does not run (exit %d): %s"
                                     % (python, done.returncode, done.stderr.strip()[-300:]))
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise WorkerEnvironmentError("the workers' Python %s printed no versions: %r"
                                     % (python, done.stdout[-200:])) from None


def mismatches(client, workers):
    """[(what, client's version, workers' version)] for everything that must agree."""
    found = []
    if _minor(client["python"]) != _minor(workers["python"]):
        found.append(("python", client["python"], workers["python"]))
    for name in REQUIRED:
        mine, theirs = client["packages"].get(name), workers["packages"].get(name)
        if mine != theirs:
            found.append((name, mine, theirs))
    for name in DATA:
        mine, theirs = client["packages"].get(name), workers["packages"].get(name)
        if mine is not None and mine != theirs:
            found.append((name, mine, theirs))
    return found


def _minor(version):
    return ".".join(str(version).split(".")[:2])


def describe(found):
    return "; ".join("%s %s here, %s on the workers" % (name, mine or "missing", theirs or "missing")
                     for name, mine, theirs in found)


def fix(python, site_python):
    """What to do, in commands: one environment for client and workers, built on the site's."""
    bin_dir = os.path.dirname(site_python)
    return ("use one environment for your client and your workers, built on the site's: `%s/daskhpc venv ~/myenv`, "
            "then `~/myenv/bin/pip install YOUR-PACKAGES` (it keeps the site's versions of dask, distributed and "
            "their dependencies), run your script with ~/myenv/bin/python and give "
            "BurstCluster(python=\"~/myenv/bin/python\"). Without packages of your own, run your script with %s and "
            "leave python= out. `daskhpc doctor --python %s` checks an environment" % (bin_dir, site_python, python))


def check(python, site_python, timeout=PROBE_TIMEOUT):
    """Raise WorkerEnvironmentError (with the fix) unless the workers' Python agrees with this process."""
    try:
        workers = probe(python, timeout)
    except WorkerEnvironmentError as exc:
        raise WorkerEnvironmentError("%s. Fix: %s" % (exc, fix(python, site_python))) from None
    found = mismatches(local_versions(), workers)
    if found:
        raise WorkerEnvironmentError(
            "the workers' Python %s does not match this client's (%s): %s. Workers in another environment fail "
            "late and obscurely, so nothing was submitted. Fix: %s"
            % (python, sys.executable, describe(found), fix(python, site_python)))
    return workers


# --- users' own environments ----------------------------------------------------------------------

PTH_NAME = "daskhpc-site.pth"


def create(path, with_pip=True):
    """A venv at ``path`` on this interpreter that also sees this environment's packages.

    ``python -m venv --system-site-packages`` is not enough: run from a venv (the site's environment is one),
    it links the *system's* site-packages, not the venv's, so dask would be missing. A ``.pth`` file puts the
    site environment's site-packages after the new environment's own, so the user's packages come first and
    everything else is the site's, version for version. pip's configuration in the environment constrains
    installs to the site's versions (``constraints.txt`` next to the site environment, written by its role).
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path):
        raise WorkerEnvironmentError("%s exists already. Fix: choose another path, or remove it first" % path)
    argv = [sys.executable, "-m", "venv", path] + ([] if with_pip else ["--without-pip"])
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    argv = [os.path.join(path, "bin", "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    purelib = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
    candidates = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    ours = [p for p in dict.fromkeys(candidates) if os.path.isdir(p)]
    with open(os.path.join(purelib, PTH_NAME), "w", encoding="utf-8") as handle:
        handle.write("# The site's Dask environment (%s), after this environment's own packages.\n" % sys.prefix)
        # addsitedir, not a bare path: the site environment's own .pth files (e.g. an editable install) count too.
        handle.write("".join("import site; site.addsitedir(%r)\n" % p for p in ours))
    constraints = os.path.join(sys.prefix, "constraints.txt")
    if os.path.exists(constraints):
        with open(os.path.join(path, "pip.conf"), "w", encoding="utf-8") as handle:
            handle.write("# Keep the site's versions of what Dask needs: workers must match the client.\n"
                         "[install]\nconstraint = %s\n" % constraints)
    return os.path.join(path, "bin", "python")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="daskhpc venv", description="Make your own Python environment on the site's, for packages of your own "
        "on the workers: install into it with its pip, run your script with its python, and give "
        "BurstCluster(python=...) its python.")
    parser.add_argument("path", help="where to create it, e.g. ~/myenv (in your home: the compute nodes share it)")
    parser.add_argument("--without-pip", action="store_true", help="do not install pip into it")
    args = parser.parse_args(argv)
    try:
        python = create(args.path, with_pip=not args.without_pip)
    except (WorkerEnvironmentError, subprocess.CalledProcessError) as exc:
        print("daskhpc venv: %s" % exc, file=sys.stderr)
        return 1
    venv = os.path.dirname(os.path.dirname(python))
    print("created %s on the site's environment (%s).\n  install:  %s -m pip install PACKAGE\n  run:      %s "
          "my_script.py\n  workers:  BurstCluster(python=%r)" % (venv, sys.prefix, python, python, python))
    return 0
