"""Build OpenPBS from source and install it into a lab image: nspawn_lab.py runs this for the PBS lab.

    pbs_build.py IMAGE_DIR

The build runs in its own chroot (LAB_DIR/pbs-build: a copy of the image plus Debian's build
dependencies), kept as a cache stamped with the tarball's name, so the image gets /opt/pbs and
none of the compilers. The tarball is DASKHPC_PBS_SOURCE, else the newest
../shared/vendor/openpbs-*.tar.gz. OpenPBS master is needed: release 23.06.06 does not compile
against Debian 12's Python 3.11 (../shared/REFERENCE.md). About 3 minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB_DIR = Path(os.environ.get("DASKHPC_LAB_DIR", "/var/lib/daskhpc-lab"))
BUILD = LAB_DIR / "pbs-build"
PREFIX = "/opt/pbs"
BUILD_DEPS = ("gcc g++ make libtool autoconf automake perl swig libhwloc-dev libx11-dev libxt-dev libedit-dev "
              "libical-dev ncurses-dev postgresql-server-dev-all python3-dev tcl-dev tk-dev libexpat-dev "
              "libssl-dev libxext-dev libxft-dev libcjson-dev").split()


def log(message):
    print("lab: " + message, flush=True)


def source_tarball():
    if os.environ.get("DASKHPC_PBS_SOURCE"):
        return Path(os.environ["DASKHPC_PBS_SOURCE"])
    found = sorted((REPO.parent / "shared" / "vendor").glob("openpbs-*.tar.gz"))
    if not found:
        raise SystemExit("lab: no OpenPBS source: set DASKHPC_PBS_SOURCE to an openpbs-*.tar.gz "
                         "(OpenPBS master; 23.06.06 does not build with Python 3.11)")
    return found[-1]


def build(image, tarball):
    stamp = BUILD / "opt" / "pbs" / ".built-from"
    if stamp.exists() and stamp.read_text().strip() == tarball.name:
        return
    log("building OpenPBS from %s in %s (about 3 minutes)" % (tarball.name, BUILD))
    subprocess.run(["rm", "-rf", "--one-file-system", str(BUILD)], check=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(BUILD)], check=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    chroot = ["chroot", str(BUILD)]
    subprocess.run([*chroot, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *BUILD_DEPS],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    (BUILD / "src").mkdir(exist_ok=True)
    subprocess.run(["tar", "-C", str(BUILD / "src"), "-xzf", str(tarball)], check=True)
    top = next(p.name for p in (BUILD / "src").iterdir() if (p / "autogen.sh").exists())
    script = ("cd /src/%s && ./autogen.sh && PYTHON=/usr/bin/python3 ./configure --prefix=%s --with-python=/usr"
              " && make -j%d && make install" % (top, PREFIX, max(os.cpu_count() or 1, 1)))
    subprocess.run([*chroot, "sh", "-ec", script], check=True, env=env, stdout=subprocess.DEVNULL)
    stamp.write_text(tarball.name + "\n")


def install(image):
    """What OpenPBS's package installs: /opt/pbs, the pbs unit, the profile script, setuid pbs_iff and
    pbs_rcp (openpbs.spec: 4755; pbs_iff proves a user's identity to the server). PBS_HOME and
    /etc/pbs.conf are the pbs_daemons role's job, per host."""
    subprocess.run(["rm", "-rf", str(image / "opt" / "pbs")], check=True)
    subprocess.run(["cp", "-a", str(BUILD / "opt" / "pbs"), str(image / "opt" / "pbs")], check=True)
    unit = "usr/lib/systemd/system/pbs.service"
    subprocess.run(["cp", str(BUILD / unit), str(image / unit)], check=True)
    subprocess.run(["cp", str(BUILD / "opt/pbs/etc/pbs.sh"), str(image / "etc/profile.d/pbs.sh")], check=True)
    for tool in ("pbs_iff", "pbs_rcp"):
        os.chmod(image / "opt" / "pbs" / "sbin" / tool, 0o4755)


def main(argv):
    if len(argv) != 1:
        raise SystemExit(__doc__)
    image = Path(argv[0])
    build(image, source_tarball())
    install(image)


if __name__ == "__main__":
    main(sys.argv[1:])
