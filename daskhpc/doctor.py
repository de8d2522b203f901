"""``daskhpc doctor``: check this machine's Dask set-up for the current user; say how to fix what fails.

Each check prints PASS or FAIL with what it found, and a fix for each failure.
Exit status 0 when every check passes, 1 otherwise. ``--json`` prints the checks as JSON.
Every command it runs has a timeout and a clean environment (``daskhpc.core.command.run``).
"""

from __future__ import annotations

import argparse
import datetime
import grp
import json
import os
import pwd
import socket
import ssl
import stat
import sys
from dataclasses import asdict, dataclass

from daskhpc import config as site
from daskhpc import environment
from daskhpc.core import command
from daskhpc.core.slurm import parsable2
from daskhpc.scheduler import BatchError
from daskhpc.scheduler.pbs import PbsBatch, parse_qstat_queues, pbs_command
from daskhpc.scheduler.slurm import SlurmBatch, split_list

# The batch system's adapter, by the site configuration's scheduler: whose commands the checks run,
# and which variables are dropped from their environment.
BATCH_SYSTEMS = {"slurm": SlurmBatch, "pbs": PbsBatch}

# Seconds any one command may take; a command that does not answer fails its check instead of hanging.
COMMAND_TIMEOUT = 30


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


class Doctor:
    """The checks, with the user, the configuration and the command runner injectable for tests."""

    def __init__(self, config=None, user=None, run=None, now=None, timeout=COMMAND_TIMEOUT, *, python=None):
        self.config_error = None
        if config is None:
            try:
                config = site.site_config()
            except site.NotConfigured as exc:  # e.g. an unsafe site file: reported by check_config
                config, self.config_error = {}, exc
        self.config = config
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self.timeout = timeout
        self.run = run or self._run
        self.now = now or datetime.datetime.now(datetime.timezone.utc)
        self.contact = site.contact(self.config)
        self.python = os.path.abspath(os.path.expanduser(python)) if python else None
        self.scheduler = self.config.get("scheduler") or "slurm"
        self.batch = BATCH_SYSTEMS.get(self.scheduler, SlurmBatch)()
        self._queue = None

    def _run(self, argv):
        return command.run(argv, timeout=self.timeout, env=self.batch.command_environment())

    def checks(self):
        results = [self.check_config()]
        if not results[0].ok:
            return results  # nothing else can be checked without the site's configuration
        if self.scheduler == "pbs":
            batch_checks = (self.check_queue, self.check_groups, self.check_queue_access)
        else:
            batch_checks = (self.check_batch, self.check_groups, self.check_association)
        for check in (self.check_python, self.check_environment, *batch_checks, self.check_tls,
                      self.check_interface, self.check_metrics_dir):
            try:
                results.append(check())
            except Exception as exc:  # a broken check must not hide the others
                results.append(Check(check.__name__[6:], False, "check failed: %s" % exc,
                                     "report this to %s" % self.contact))
        return results

    # --- the checks ---------------------------------------------------------------------

    def check_config(self):
        if self.config_error is not None:
            return Check("site configuration", False, str(self.config_error).split(". Fix:", 1)[0],
                         "ask %s to re-run the onprem.daskhpc.dask_client role on this machine (it writes %s "
                         "root-owned, mode 0644)" % (self.contact, site.SITE_FILE))
        try:
            cfg = site.require_site(self.config)
        except site.NotConfigured as exc:
            return Check("site configuration", False, str(exc).split(". Fix:", 1)[0],
                         "ask %s to run the onprem.daskhpc.dask_client role on this machine (it writes %s)"
                         % (self.contact, site.SITE_FILE))
        return Check("site configuration", True, "%s: site %s, partition %s, QOS %s, account %s (from %s)" % (
            "configured", cfg["site"], cfg["partition"], cfg["qos"], cfg["account"],
            site.config_source() or "package defaults"))

    def check_python(self):
        python = self.config.get("python") or sys.executable
        if not os.access(python, os.X_OK):
            return Check("worker python", False, "%s is missing or not executable by %s" % (python, self.user),
                         "ask %s to run the dask_client role on the compute nodes" % self.contact)
        rc, _out, err = self.run([python, "-c", "import daskhpc.worker"])
        if rc != 0:
            return Check("worker python", False,
                         "%s cannot import daskhpc.worker: %s" % (python, err.strip()[-200:]),
                         "ask %s to re-run the dask_client role (the environment is incomplete)" % self.contact)
        return Check("worker python", True, "%s runs daskhpc.worker" % python)

    def check_environment(self):
        """The workers' Python (the site's, or --python) has the versions of what Dask needs that this one has."""
        site_python = self.config.get("python") or sys.executable
        python = self.python or site_python
        try:
            versions = environment.probe(python, timeout=self.timeout)
        except environment.WorkerEnvironmentError as exc:
            return Check("worker environment", False, str(exc), environment.fix(python, site_python))
        found = environment.mismatches(environment.local_versions(), versions)
        if found:
            return Check("worker environment", False, "%s differs from %s: %s"
                         % (python, sys.executable, environment.describe(found)), environment.fix(python, site_python))
        return Check("worker environment", True, "%s matches %s: python %s, dask %s, distributed %s"
                     % (python, sys.executable, versions["python"], versions["packages"].get("dask"),
                        versions["packages"].get("distributed")))

    def check_batch(self):
        partition = self.config["partition"]
        rc, out, err = self.run(["sinfo", "--noheader", "--partition=" + partition, "--format=%a|%D|%C"])
        if rc != 0:
            return Check("batch system", False, "sinfo failed: %s" % (err.strip() or "rc=%d" % rc),
                         "the SLURM controller is not reachable from here: check `scontrol ping` and munge "
                         "(`munge -n | unmunge`); if both fail, tell %s" % self.contact)
        rows = parsable2(out, ("avail", "nodes", "cpus"))
        if not rows:
            return Check("batch system", False, "partition %s does not exist" % partition,
                         "ask %s: the site configuration names a partition SLURM does not have" % self.contact)
        avail, nodes, cpus = rows[0]["avail"], rows[0]["nodes"], rows[0]["cpus"]
        if avail != "up":
            return Check("batch system", False, "partition %s is %s" % (partition, avail),
                         "wait until %s brings the partition back up" % self.contact)
        return Check("batch system", True, "partition %s is up: %s nodes, CPUs allocated/idle/other/total %s"
                     % (partition, nodes, cpus))

    def user_groups(self):
        entry = pwd.getpwnam(self.user)
        return sorted({grp.getgrgid(gid).gr_name for gid in os.getgrouplist(self.user, entry.pw_gid)})

    def check_groups(self):
        allowed = self.config.get("allowed-groups") or []
        groups = self.user_groups()
        if not allowed:
            return Check("burst access", True, "the partition names no groups (everyone may use it)")
        shared = sorted(set(groups) & set(allowed))
        if not shared:
            return Check("burst access", False, "%s is in %s, none of the allowed groups %s"
                         % (self.user, ", ".join(groups) or "no groups", ", ".join(allowed)),
                         "ask %s to add you to one of these directory groups: %s (SLURM picks up membership "
                         "within a few minutes)" % (self.contact, ", ".join(allowed)))
        return Check("burst access", True, "%s is in %s (allowed: %s)" % (self.user, ", ".join(shared),
                                                                          ", ".join(allowed)))

    def check_association(self):
        account, qos = self.config["account"], self.config["qos"]
        rc, out, err = self.run(["sacctmgr", "--noheader", "--parsable2", "show", "associations",
                                 "where", "user=" + self.user, "account=" + account, "format=User,Account,QOS"])
        if rc != 0:
            return Check("burst association", False, "sacctmgr failed: %s" % err.strip(),
                         "the accounting daemon (slurmdbd) is not reachable; tell %s" % self.contact)
        rows = parsable2(out, "User,Account,QOS")
        if not rows:
            return Check("burst association", False, "%s has no association with account %s" % (self.user, account),
                         "associations follow directory group membership; ask %s to add you to an allowed group "
                         "(then the site's sync adds the association)" % self.contact)
        qos_list = split_list(rows[0]["QOS"])
        if qos not in qos_list:
            return Check("burst association", False, "association %s/%s lacks QOS %s (has: %s)"
                         % (self.user, account, qos, ",".join(qos_list) or "none"),
                         "ask %s to re-run the access sync" % self.contact)
        return Check("burst association", True, "%s may submit with account %s and QOS %s" % (self.user, account, qos))

    def burst_queue(self):
        """The burst queue's attributes as the PBS server has them (``qstat -Qf -F json``), asked once:
        {attribute: [values]}; None when there is no such queue; BatchError when the server does not answer."""
        if self._queue is None:
            queue = self.config["partition"]
            rc, out, err = self.run([pbs_command("qstat"), "-Q", "-f", "-F", "json", queue])
            if rc == 0:
                self._queue = parse_qstat_queues(out).get(queue, {})
            elif "unknown queue" in err.lower():
                self._queue = {}
            else:  # kept, so that a server that does not answer costs one timeout, not one per check
                self._queue = BatchError("qstat failed: %s" % (err.strip() or "rc=%d" % rc))
        if isinstance(self._queue, BatchError):
            raise self._queue
        return self._queue or None

    def _pbs_unreachable(self, name, exc):
        return Check(name, False, str(exc),
                     "the PBS server is not reachable from here: check `qstat -B` and that pbs_comm runs on "
                     "the server; if it does not answer, tell %s" % self.contact)

    def check_queue(self):
        queue = self.config["partition"]
        try:
            attrs = self.burst_queue()
        except BatchError as exc:
            return self._pbs_unreachable("batch system", exc)
        if attrs is None:
            return Check("batch system", False, "queue %s does not exist" % queue,
                         "ask %s: the site configuration names a queue PBS does not have" % self.contact)
        for attribute, word in (("enabled", "disabled (it accepts no jobs)"), ("started", "stopped (it runs no jobs)")):
            if attrs.get(attribute) != ["True"]:
                return Check("batch system", False, "queue %s is %s" % (queue, word),
                             "wait until %s brings the queue back" % self.contact)
        return Check("batch system", True, "queue %s is enabled and started: %s"
                     % (queue, " ".join((attrs.get("state_count") or [""])[0].split()) or "no jobs"))

    def check_queue_access(self):
        """What PBS itself enforces: the queue's acl_groups (resolved on the server, through the directory)."""
        queue = self.config["partition"]
        try:
            attrs = self.burst_queue()
        except BatchError as exc:
            return self._pbs_unreachable("queue access", exc)
        if attrs is None:
            return Check("queue access", False, "queue %s does not exist" % queue,
                         "ask %s: the site configuration names a queue PBS does not have" % self.contact)
        if attrs.get("acl_group_enable") != ["True"]:
            return Check("queue access", True, "queue %s admits every user (no group list)" % queue)
        acl = sorted(g for value in attrs.get("acl_groups", []) for g in value.split(",") if g)
        shared = sorted(set(acl) & set(self.user_groups()))
        if not shared:
            return Check("queue access", False, "queue %s admits only %s; %s is in none of them"
                         % (queue, ", ".join(acl) or "no group", self.user),
                         "ask %s to add you to one of these directory groups: %s" % (self.contact, ", ".join(acl)))
        return Check("queue access", True, "queue %s admits %s (%s)" % (queue, self.user, ", ".join(shared)))

    def check_tls(self):
        mode = site.tls_mode(self.config)
        paths = site.tls_paths(self.config)
        missing = [key for key in ("ca", "cert", "key") if not (paths[key] and os.access(paths[key], os.R_OK))]
        if missing:
            detail = "missing or unreadable: %s" % ", ".join("%s (%s)" % (k, paths[k]) for k in missing)
            if mode != "required":
                return Check("certificates", True, "TLS is optional here; " + detail)
            return Check("certificates", False, detail,
                         "user credentials are issued to members of the burst groups and renewed automatically; "
                         "ask %s to run the site's user_credentials playbook" % self.contact)
        key_mode = stat.S_IMODE(os.stat(paths["key"]).st_mode)
        if key_mode & 0o077:
            return Check("certificates", False, "your key %s is readable by others (mode %04o)"
                         % (paths["key"], key_mode), "chmod 600 %s" % paths["key"])
        from cryptography import x509

        with open(paths["cert"], "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        cn = names[0].value if names else None
        if cn != self.user:
            return Check("certificates", False, "your certificate is for %r, not %s" % (cn, self.user),
                         "ask %s to reissue your credential" % self.contact)
        not_after = cert.not_valid_after_utc
        left = not_after - self.now
        if left.total_seconds() <= 0:
            return Check("certificates", False, "your certificate expired on %s" % not_after.isoformat(),
                         "credentials renew automatically; ask %s to run the user_credentials playbook"
                         % self.contact)
        if not self._issued_by_site_ca(cert, paths["ca"]):
            return Check("certificates", False, "your certificate is not signed by the site CA in %s" % paths["ca"],
                         "ask %s to reissue your credential" % self.contact)
        soon = " (renewal due soon)" if left < datetime.timedelta(days=1) else ""
        return Check("certificates", True, "CN=%s, valid until %s, %d h left%s" % (
            cn, not_after.strftime("%Y-%m-%d %H:%M UTC"), left.total_seconds() // 3600, soon))

    @staticmethod
    def _issued_by_site_ca(cert, ca_file):
        from cryptography import x509

        with open(ca_file, "rb") as handle:
            cas = x509.load_pem_x509_certificates(handle.read())
        for ca in cas:
            try:
                cert.verify_directly_issued_by(ca)
                return True
            except Exception:
                continue
        return False

    def check_interface(self):
        interface = self.config.get("interface")
        host = "0.0.0.0"
        if interface:
            import psutil

            addrs = [a.address for a in psutil.net_if_addrs().get(interface, []) if a.family == socket.AF_INET]
            if not addrs:
                return Check("connectivity", False, "network interface %s has no IPv4 address here" % interface,
                             "the site configuration names interface %s; ask %s which one to use on this machine"
                             % (interface, self.contact))
            host = addrs[0]
        with socket.socket() as sock:
            try:
                sock.bind((host, 0))
                sock.listen(1)
                port = sock.getsockname()[1]
                with socket.create_connection((host, port), timeout=5):
                    pass
            except OSError as exc:
                return Check("connectivity", False, "cannot listen and connect on %s: %s" % (host, exc),
                             "the scheduler must accept connections from compute nodes; ask %s about the "
                             "firewall" % self.contact)
        return Check("connectivity", True, "the scheduler can listen on %s (%s)" % (host, interface or "any"))

    def check_metrics_dir(self):
        path = self.config.get("metrics-targets-dir")
        if not path:
            return Check("metrics discovery", True, "no discovery directory configured")
        if not os.path.isdir(path):
            return Check("metrics discovery", False, "%s does not exist: Prometheus will not find clusters started "
                         "on this host" % path,
                         "ask %s to run the site's metrics playbook on this login host (role dask_discovery)"
                         % self.contact)
        if not os.access(path, os.W_OK | os.X_OK):
            return Check("metrics discovery", False, "%s is not writable by %s" % (path, self.user),
                         "ask %s to make it mode 1777" % self.contact)
        port = self.config.get("metrics-discovery-port")
        if not port:
            return Check("metrics discovery", True, "clusters register in %s" % path)
        problem = self.probe_discovery(int(port))
        if problem:
            return Check("metrics discovery", False, problem,
                         "ask %s to check the discovery service here (`systemctl status daskhpc-discovery`)"
                         % self.contact)
        return Check("metrics discovery", True, "clusters register in %s; the discovery service on port %d "
                     "answers, and only to Prometheus" % (path, int(port)))

    def probe_discovery(self, port, host=None):
        """What is wrong with this host's discovery service, or None when it answers with a site
        certificate and refuses us: we hold no Prometheus certificate, and nobody but Prometheus may
        read the targets. The service listens on this host's own address (role dask_discovery), which
        its name resolves to, not on loopback."""
        host = host or socket.gethostname()
        ca = site.tls_paths(self.config)["ca"]
        ctx = ssl.create_default_context(cafile=ca if ca and os.path.exists(ca) else None)
        ctx.check_hostname = False  # its certificate names the inventory name; the chain must be the site CA's
        try:
            raw = socket.create_connection((host, port), timeout=5)
        except OSError as exc:
            return "nothing answers on %s:%d (%s): Prometheus will not find clusters started here" % (
                host, port, exc.strerror or exc)
        with raw:
            try:
                with ctx.wrap_socket(raw) as tls:
                    tls.sendall(b"GET /targets HTTP/1.0\r\n\r\n")
                    answer = tls.recv(64)
            except ssl.SSLCertVerificationError as exc:
                return "the service on port %d has no certificate from the site CA (%s)" % (port, exc.verify_message)
            except socket.timeout:
                return "the service on port %d does not answer within 5 s" % port
            except OSError:  # the TLS alert or reset refusing a client without Prometheus's certificate
                return None
        if answer.startswith(b"HTTP/"):
            return "the service on port %d answers clients without Prometheus's certificate" % port
        return None


def render(results, user, config):
    lines = ["daskhpc doctor: site %s, user %s" % (config.get("site") or "?", user)]
    for check in results:
        lines.append("%s  %-18s %s" % ("PASS" if check.ok else "FAIL", check.name, check.detail))
        if not check.ok and check.fix:
            lines.append("      %-18s fix: %s" % ("", check.fix))
    failed = sum(1 for c in results if not c.ok)
    lines.append("%d passed, %d failed" % (len(results) - failed, failed))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="daskhpc doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--python", help="check this Python for the workers too, e.g. ~/myenv/bin/python (as "
                                         "BurstCluster(python=...) would use it)")
    args = parser.parse_args(argv)
    doctor = Doctor(python=args.python)
    results = doctor.checks()
    if args.json:
        print(json.dumps([asdict(c) for c in results], indent=2))
    else:
        print(render(results, doctor.user, doctor.config))
    return 0 if all(c.ok for c in results) else 1


if __name__ == "__main__":
    sys.exit(main())
