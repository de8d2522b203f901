"""The lab harness: Debian 12 hosts, each booted with systemd under systemd-nspawn, on a private bridge.

The hosts, their addresses and the bridge come from the lab inventory (inventories/lab/hosts.yml),
so the harness and Ansible can never disagree about them. Everything the harness makes lives under
one directory (LAB_DIR, default /var/lib/daskhpc-lab) plus the bridge; `destroy` removes both.

    nspawn_lab.py up        build the image if needed, boot every host, wait for SSH
    nspawn_lab.py down      shut every host down (their disks are kept)
    nspawn_lab.py destroy   shut down and remove hosts, image, keys and bridge
    nspawn_lab.py status    one line per host
    nspawn_lab.py cut HOST | restore HOST    take a host's link down / up (fault tests)
    nspawn_lab.py stop HOST | start HOST     power one host off / on (fault tests)

DASKHPC_LAB_INVENTORY picks another lab on the same bridge (inventories/lab-pbs: the PBS lab). Its
`lab_nspawn.variant` keeps its image, hosts, shared home, known_hosts and /etc/hosts block apart
from the SLURM lab's, so both labs can run at once; `lab_nspawn.build` bakes extra software (OpenPBS
from source, lab/pbs_build.py) into the variant's image.

Locks: the callers (Makefile, tests/conftest.py, .ci/run) hold one lock per lab for as long as they use
it, /tmp/daskhpc-lab.lock (SLURM) or /tmp/daskhpc-lab-<variant>.lock. What the labs share (the
controller's SSH key, the bridge, /etc/hosts) is changed here under SHARED_LOCK, held for seconds and
never by a caller. `destroy` of the SLURM lab removes everything, the variants' labs too: its callers
hold every lab's lock.

Facts this relies on (../shared/REFERENCE.md): the machine's PID 1 is not systemd, so nspawn needs
--register=no --keep-unit; hosts reach no outside network, so Debian's packages are baked into the
image from the machine (the roles' own apt tasks then find them installed).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / os.environ.get("DASKHPC_LAB_INVENTORY", "inventories/lab") / "hosts.yml"
PACKAGES = Path(__file__).with_name("packages.txt")
LAB_DIR = Path(os.environ.get("DASKHPC_LAB_DIR", "/var/lib/daskhpc-lab"))
with open(INVENTORY, encoding="utf-8") as _fh:
    # A variant lab (e.g. "pbs") suffixes everything it owns, so it never touches the SLURM lab's.
    _VARIANT = yaml.safe_load(_fh)["all"]["vars"]["lab_nspawn"].get("variant", "")
SUFFIX = "-" + _VARIANT if _VARIANT else ""
IMAGE = LAB_DIR / ("image" + SUFFIX)
HOSTS_DIR = LAB_DIR / ("hosts" + SUFFIX)
HOME_DIR = LAB_DIR / ("home" + SUFFIX)   # the lab's shared /home (real sites: NFS)
SSH_DIR = LAB_DIR / "ssh"
KNOWN_HOSTS = SSH_DIR / ("known_hosts" + SUFFIX)
MIRROR = os.environ.get("DASKHPC_LAB_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
SHARED_LOCK = "/tmp/daskhpc-lab-shared.lock"
# What debootstrap puts in: enough to boot with systemd and be managed by Ansible over SSH.
BOOTSTRAP = "systemd,systemd-sysv,dbus,iproute2,openssh-server,python3,python3-apt,sudo,procps,ca-certificates"


def log(message):
    print("lab: " + message, flush=True)


@contextlib.contextmanager
def shared_state():
    """Held while changing what every lab uses (key, bridge, /etc/hosts): two labs' `up` may overlap."""
    with open(SHARED_LOCK, "w", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run(*argv, check=True, **kwargs):
    return subprocess.run(list(argv), check=check, **kwargs)


def lab_hosts():
    """{name: {"address": ip, "shared_home": bool}} and the bridge settings, from the inventory."""
    with open(INVENTORY, encoding="utf-8") as fh:
        inventory = yaml.safe_load(fh)["all"]
    settings = inventory["vars"]["lab_nspawn"]
    hosts = {}

    def walk(group):
        for name, hostvars in (group.get("hosts") or {}).items():
            if hostvars and "ansible_host" in hostvars:
                hosts[name] = hostvars["ansible_host"]
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(inventory)
    return hosts, settings


# --- the image --------------------------------------------------------------------------------

def packages():
    names = []
    extra = lab_hosts()[1].get("packages")  # a variant's own list, on top of the roles' packages
    for path in [PACKAGES] + ([PACKAGES.with_name(extra)] if extra else []):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            names.extend(line.split())
    return names


def ensure_machine_tools():
    missing = [tool for tool in ("systemd-nspawn", "debootstrap") if shutil.which(tool) is None]
    if not missing:
        return
    with shared_state():  # two labs coming up at once must not run apt-get at once
        if any(shutil.which(tool) is None for tool in missing):
            log("installing systemd-container and debootstrap on this machine")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            run("apt-get", "update", "-qq", env=env)
            run("apt-get", "install", "-y", "-qq", "systemd-container", "debootstrap", env=env)


def build_image():
    """debootstrap, then bake the roles' packages in with their services left disabled."""
    if (IMAGE / "etc" / "daskhpc-lab-image").exists():
        return
    ensure_machine_tools()
    staging = LAB_DIR / (IMAGE.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    LAB_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    log("debootstrap %s into %s (about a minute)" % (SUITE, staging))
    run("debootstrap", "--variant=minbase", "--include=" + BOOTSTRAP, SUITE, str(staging), MIRROR,
        stdout=subprocess.DEVNULL)
    chroot = ["chroot", str(staging)]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    # Packages must not start daemons inside the chroot.
    policy = staging / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # The roles answer these debconf questions themselves; the image must not pre-empt them.
    preseed = "slapd slapd/no_configuration boolean true\nlibnss-ldapd libnss-ldapd/nsswitch multiselect\n"
    run(*chroot, "debconf-set-selections", input=preseed.encode(), env=env)
    (staging / "etc" / "apt" / "sources.list").write_text(
        "deb %s %s main\ndeb %s %s-updates main\n" % (MIRROR, SUITE, MIRROR, SUITE))
    before = set(unit_files(staging))
    log("baking %d packages into the image" % len(packages()))
    run(*chroot, "apt-get", "update", "-qq", env=env, stdout=subprocess.DEVNULL)
    run(*chroot, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages(), env=env,
        stdout=subprocess.DEVNULL)
    run(*chroot, "apt-get", "clean", env=env)
    build = lab_hosts()[1].get("build")
    if build:  # software a variant builds from source, in a separate stage (lab/<build>_build.py)
        run(sys.executable, str(Path(__file__).with_name(build + "_build.py")), str(staging))
    policy.unlink()
    # A package's service runs only where a role enables it, as it would on a real site.
    baked_services = sorted(set(unit_files(staging)) - before)
    for service in baked_services:
        run(*chroot, "systemctl", "disable", "--quiet", service, check=False, stderr=subprocess.DEVNULL)
    run(*chroot, "systemctl", "enable", "--quiet", "systemd-networkd", "ssh")
    # Each host makes its own SSH host keys and MUNGE key on first boot: no key is shared by the image.
    for key in (staging / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    dropin = staging / "etc" / "systemd" / "system" / "ssh.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    # Debian's unit checks the configuration first (sshd -t), which fails without keys: make them first.
    (dropin / "host-keys.conf").write_text(
        "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n")
    for path in (staging / "etc" / "munge" / "munge.key", staging / "etc" / "machine-id"):
        if path.exists():
            path.unlink()
    (staging / "etc" / "machine-id").write_text("")
    (staging / "etc" / "daskhpc-lab-image").write_text("baked: %s\n" % " ".join(packages()))  # image_is_current
    staging.rename(IMAGE)


def unit_files(root):
    """Units that packages enabled: services, sockets (e.g. mariadb.socket), timers, LSB scripts (e.g. slapd)."""
    wants = root / "etc" / "systemd" / "system"
    units = [link.name for link in wants.glob("*.wants/*") if link.is_symlink()
             and link.suffix in (".service", ".socket", ".timer")]
    units += [script.name + ".service" for script in (root / "etc" / "init.d").glob("*")]
    return units


# --- hosts --------------------------------------------------------------------------------------

def ssh_key():
    SSH_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = SSH_DIR / "id_ed25519"
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "daskhpc-lab-controller", "-f", str(key))
    return key


def prepare_host(name, address, prefix, all_hosts, shared_home):
    upper = HOSTS_DIR / name / "upper"
    (upper / "etc" / "systemd" / "network").mkdir(parents=True, exist_ok=True)
    (HOSTS_DIR / name / "root").mkdir(exist_ok=True)
    (upper / "etc" / "hostname").write_text(name + "\n")
    # Same name as the image's default (DHCP on host0), so this file replaces it. No gateway:
    # the host reaches the lab's other hosts and nothing else.
    (upper / "etc" / "systemd" / "network" / "80-container-host0.network").write_text(
        "[Match]\nName=host0\n\n[Network]\nAddress=%s/%d\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        % (address, prefix))
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    hosts += ["%s %s" % (ip, host) for host, ip in sorted(all_hosts.items(), key=lambda kv: kv[1])]
    (upper / "etc" / "hosts").write_text("\n".join(hosts) + "\n")
    ssh = upper / "root" / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text((SSH_DIR / "id_ed25519.pub").read_text())
    os.chmod(ssh / "authorized_keys", 0o600)


def pid_of(name, hosts_dir=HOSTS_DIR):
    pidfile = hosts_dir / name / "nspawn.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            if b"systemd-nspawn" not in fh.read():
                return None
        return pid
    except (OSError, ValueError):
        return None


def boot(name, settings, shared_home):
    if pid_of(name):
        return
    argv = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--machine=" + name,
            "--directory=" + str(IMAGE), "--overlay=%s:%s:/" % (IMAGE, HOSTS_DIR / name / "upper"),
            "--boot", "--network-bridge=" + settings["bridge"], "--console=passive", "--link-journal=no",
            "--resolv-conf=off", "--timezone=off"]
    if shared_home:
        argv.append("--bind=%s:/home" % HOME_DIR)
    logfile = open(HOSTS_DIR / name / "console.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True)
    (HOSTS_DIR / name / "nspawn.pid").write_text(str(proc.pid))


def ensure_bridge(settings):
    bridge, address = settings["bridge"], settings["address"]
    if run("ip", "link", "show", bridge, check=False, capture_output=True).returncode != 0:
        run("ip", "link", "add", bridge, "type", "bridge")
    current = run("ip", "-o", "addr", "show", "dev", bridge, capture_output=True, text=True).stdout
    if address.split("/")[0] not in current:
        run("ip", "addr", "add", address, "dev", bridge)
    run("ip", "link", "set", bridge, "up")


def wait_for_ssh(hosts, timeout=120):
    """Wait until every host in `hosts` answers on port 22, then record all running hosts' keys."""
    deadline = time.monotonic() + timeout
    pending = dict(hosts)
    while pending and time.monotonic() < deadline:
        for name, address in list(pending.items()):
            try:
                with socket.create_connection((address, 22), timeout=1):
                    pending.pop(name)
            except OSError:
                pass
        time.sleep(0.3)
    if pending:
        raise SystemExit("lab: no SSH from %s after %ds; see %s/<host>/console.log"
                         % (", ".join(sorted(pending)), timeout, HOSTS_DIR))
    # Record each host's own key: Ansible checks host keys strictly against this file.
    known = KNOWN_HOSTS
    lines = []
    running = {name: address for name, address in lab_hosts()[0].items() if pid_of(name)}
    for name, address in sorted(running.items()):
        for _attempt in range(20):
            scan = run("ssh-keyscan", "-T", "2", "-t", "ed25519", address, capture_output=True, text=True,
                       check=False).stdout
            if scan.strip():
                break
            time.sleep(0.5)
        lines += [line.replace(address, "%s,%s" % (address, name), 1) for line in scan.splitlines()
                  if line and not line.startswith("#")]
    known.write_text("\n".join(lines) + "\n")


# Run on a freshly booted host: wait for the boot to end, then start again any unit that failed.
# systemd's own units first (the others may need what they make); `start`, since some refuse a restart.
RETRY_FAILED_UNITS = """timeout 120 systemctl is-system-running --wait >/dev/null 2>&1
failed=$(systemctl --failed --no-legend --plain | awk '{print $1}' | sort -t- -k1,1 -s | grep '^systemd-'; \
         systemctl --failed --no-legend --plain | awk '{print $1}' | grep -v '^systemd-')
for unit in $failed; do systemctl start "$unit" || true; done
echo $failed"""


def retry_failed_boot_units(name, address):
    """Start again the units that failed while a host booted.

    On this machine (cgroup v1 with a systemd hierarchy, PID 1 not systemd) a booting host's
    systemd now and then fails to attach an early unit to its cgroup when the machine is busy
    ("Failed to attach to cgroup ... No such file or directory"). When that unit is
    systemd-tmpfiles-setup, /run/mysqld and /run/slapd are never made and MariaDB or slapd fail
    later. A real host does not do this; the lab retries such units once, and says which.
    """
    argv = ["ssh", "-i", str(SSH_DIR / "id_ed25519"), "-o", "UserKnownHostsFile=%s" % KNOWN_HOSTS,
            "-o", "BatchMode=yes", "root@" + address, RETRY_FAILED_UNITS]
    retried = run(*argv, capture_output=True, text=True, check=False).stdout.split()
    if retried:
        log("%s: units that failed at boot started again: %s" % (name, ", ".join(retried)))


HOSTS_FILE = Path("/etc/hosts")
HOSTS_MARK = "# daskhpc-lab" + SUFFIX


def strip_all_names():
    """Remove every lab's marked block from /etc/hosts (the SLURM lab's destroy removes every lab)."""
    text = HOSTS_FILE.read_text()
    kept = [line for line in text.splitlines() if "# daskhpc-lab" not in line]
    if "\n".join(kept) + "\n" != text:
        HOSTS_FILE.write_text("\n".join(kept) + "\n")


def publish_names(hosts):
    """Let the controller (this machine) resolve the lab's host names, as a site's DNS would."""
    kept = [line for line in HOSTS_FILE.read_text().splitlines() if not line.endswith(HOSTS_MARK)]
    kept += ["%s %s %s" % (ip, name, HOSTS_MARK) for name, ip in sorted(hosts.items(), key=lambda kv: kv[1])]
    text = "\n".join(kept) + "\n"
    if text != HOSTS_FILE.read_text():
        HOSTS_FILE.write_text(text)  # in place: /etc/hosts may be a bind mount


def image_is_current():
    """Whether the image holds every package packages.txt lists now (a longer list baked earlier is fine)."""
    stamp = IMAGE / "etc" / "daskhpc-lab-image"
    if not stamp.exists():
        return False
    baked = set(stamp.read_text().split()[1:])
    return set(packages()) <= baked


def up():
    hosts, settings = lab_hosts()
    if IMAGE.exists() and not image_is_current():
        # Hosts are overlays on the image: a new image means new hosts. The converge rebuilds the rest.
        # Only this lab's own: the other lab may be in use under its own lock.
        log("packages.txt lists packages the image lacks: rebuilding the lab from nothing")
        remove_own()
    build_image()
    HOME_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with shared_state():
        ssh_key()
        ensure_bridge(settings)
    network = ipaddress.ip_interface(settings["address"]).network
    shared = set(settings["shared_home"])
    booted = {name: address for name, address in hosts.items() if not pid_of(name)}
    for name, address in hosts.items():
        prepare_host(name, address, network.prefixlen, hosts, name in shared)
        boot(name, settings, name in shared)
    with shared_state():
        publish_names(hosts)
    wait_for_ssh(hosts)
    for name, address in sorted(booted.items()):
        retry_failed_boot_units(name, address)
    log("%d hosts up on %s (%s): %s" % (len(hosts), settings["bridge"], network, ", ".join(sorted(hosts))))


def stop_host(name, timeout=30, hosts_dir=HOSTS_DIR):
    pid = pid_of(name, hosts_dir)
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)  # nspawn -b: SIGTERM shuts the host down cleanly
    deadline = time.monotonic() + timeout
    while pid_of(name, hosts_dir) and time.monotonic() < deadline:
        time.sleep(0.3)
    if pid_of(name, hosts_dir):
        os.killpg(pid, signal.SIGKILL)


def down(hosts_dir=HOSTS_DIR):
    """Shut down this lab's hosts (another hosts_dir: every host booted from that directory)."""
    hosts, _settings = lab_hosts() if INVENTORY.exists() and hosts_dir == HOSTS_DIR else ({}, {})
    names = set(hosts) | ({p.name for p in hosts_dir.iterdir()} if hosts_dir.exists() else set())
    for name in sorted(names):
        pid = pid_of(name, hosts_dir)
        if pid:
            os.kill(pid, signal.SIGTERM)
    for name in sorted(names):
        stop_host(name, hosts_dir=hosts_dir)


def remove_own():
    """This lab's hosts, image, home, known_hosts and /etc/hosts block; not what the labs share."""
    down()
    with shared_state():
        publish_names({})
    for path in (IMAGE, HOSTS_DIR, HOME_DIR, KNOWN_HOSTS):
        run("rm", "-rf", "--one-file-system", str(path))


def destroy():
    _, settings = lab_hosts()
    if SUFFIX:  # a variant removes only what it owns; the bridge, keys and SLURM lab stay
        remove_own()
        log("removed the %s lab's image, hosts and home" % _VARIANT)
        return
    # The SLURM lab's destroy removes everything under LAB_DIR, the variants' labs included (the
    # Makefile holds every lab's lock for it): their hosts are shut down first.
    down()
    for other in sorted(LAB_DIR.glob("hosts-*")) if LAB_DIR.exists() else ():
        down(other)
    run("ip", "link", "del", settings["bridge"], check=False, stderr=subprocess.DEVNULL)
    with shared_state():
        strip_all_names()
    if LAB_DIR.exists():
        # Overlay upper dirs may hold files with odd attributes; rm -rf copes with all of them.
        run("rm", "-rf", "--one-file-system", str(LAB_DIR))
    log("removed %s and bridge %s" % (LAB_DIR, settings["bridge"]))


def set_link(name, state):
    run("ip", "link", "set", "vb-" + name, state)


def status():
    hosts, _settings = lab_hosts()
    for name, address in sorted(hosts.items()):
        print("%-8s %-15s %s" % (name, address, "running" if pid_of(name) else "stopped"))


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    command, args = argv[0], argv[1:]
    if command == "up":
        up()
    elif command == "down":
        down()
    elif command == "destroy":
        destroy()
    elif command == "status":
        status()
    elif command in ("cut", "restore"):
        set_link(args[0], "down" if command == "cut" else "up")
    elif command == "stop":
        stop_host(args[0])
    elif command == "start":
        hosts, settings = lab_hosts()
        boot(args[0], settings, args[0] in settings["shared_home"])
        wait_for_ssh({args[0]: hosts[args[0]]})
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
