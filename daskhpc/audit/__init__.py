# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`daskhpc audit`: reports for auditors (HTML, Markdown, CSV, JSON) from the site's own facts.

    collect(inputs) -> report dict      (daskhpc.audit.collect; explicit inputs, no I/O)
    render(report, output_dir, formats) (daskhpc.audit.render)
    main(argv)                           the CLI; gathers inputs locally or from files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime

import yaml

from daskhpc.audit import probe
from daskhpc.audit.collect import collect, default_period, is_unavailable
from daskhpc.audit.render import FORMATS, SCHEMA_PATH, render
from daskhpc.core import command
from daskhpc.core.site_model import SiteModelError, load_site_file

__all__ = ["collect", "render", "main", "gather", "SCHEMA_PATH"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def unavailable(why):
    return {"unavailable": why}


def collection_version():
    for path in (os.path.join(REPO_ROOT, "galaxy.yml"), os.path.join(REPO_ROOT, "MANIFEST.json")):
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)  # JSON is YAML too
        except (OSError, yaml.YAMLError):
            continue
        version = data.get("version") or (data.get("collection_info") or {}).get("version")
        if version:
            return str(version)
    return unavailable("neither galaxy.yml nor MANIFEST.json found beside the package")


def load_site_model(path):
    """(model, inventory {host: groups}, hosts Ansible reaches locally) from a file or an inventory directory."""
    if path is None:
        return unavailable("no --site-model given"), unavailable("no inventory given"), []
    if os.path.isdir(path):
        return _from_inventory(path)
    try:
        data = load_site_file(path)  # bounded: size, aliases, nesting
    except SiteModelError as exc:
        return unavailable("cannot read %s: %s" % (path, "; ".join(exc.errors))), \
            unavailable("site model given as a file"), []
    if isinstance(data, dict) and "daskhpc_site" in data:
        data = data["daskhpc_site"]
    return data, unavailable("the site model was given as a file, not an inventory"), []


def _from_inventory(path):
    returncode, out, err = command.run(["ansible-inventory", "-i", path, "--list"], timeout=300)
    why = err.strip()[:300]
    try:
        listing = json.loads(out) if returncode == 0 else None
    except ValueError as exc:
        listing, why = None, str(exc)
    if listing is None:
        return _group_vars_model(path), unavailable("ansible-inventory failed: %s" % why), []
    hosts = {}
    for group, body in listing.items():
        if group == "_meta" or not isinstance(body, dict):
            continue
        for host in body.get("hosts", []):
            roles = hosts.setdefault(host, [])
            if group not in ("all", "ungrouped"):
                roles.append(group)
    for host in listing.get("_meta", {}).get("hostvars", {}):
        hosts.setdefault(host, [])
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    model = next((hostvars[h]["daskhpc_site"] for h in sorted(hostvars) if "daskhpc_site" in hostvars[h]), None)
    if model is None:
        model = _group_vars_model(path)
    local = sorted(h for h, hv in hostvars.items() if hv.get("ansible_connection") == "local")
    return model, {h: sorted(set(g)) for h, g in hosts.items()}, local


def _group_vars_model(path):
    refused = []
    for candidate in sorted(_yaml_files(os.path.join(path, "group_vars", "all"))) + \
            [os.path.join(path, "group_vars", "all.yml")]:
        if not os.path.exists(candidate):
            continue
        try:
            data = load_site_file(candidate)  # bounded: size, aliases, nesting
        except SiteModelError as exc:
            refused.extend(exc.errors)  # e.g. a vault-encrypted file; named if no model is found
            continue
        if isinstance(data, dict) and "daskhpc_site" in data:
            return data["daskhpc_site"]
    return unavailable("no daskhpc_site in %s/group_vars/all%s" % (path, "".join("; " + e for e in refused)))


def _yaml_files(directory):
    try:
        return [os.path.join(directory, f) for f in os.listdir(directory) if f.endswith((".yml", ".yaml"))]
    except OSError:
        return []


def run_check_mode(playbook, inventory):
    """The drift of a check-mode run, through the collection's drift_json callback."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="onprem.daskhpc.drift_json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    argv = ["ansible-playbook", "--check", "--diff", playbook] + (["-i", inventory] if inventory else [])
    # A non-zero exit still prints the drift (failed or unreachable hosts); only a run that never
    # started or was killed has none.
    returncode, out, err = command.run(argv, timeout=3600, env=env)
    if returncode in (command.TIMED_OUT, command.NOT_FOUND):
        return unavailable(err)
    start = out.find("{")
    try:
        return json.loads(out[start:]) if start >= 0 else unavailable(
            "%s printed no JSON: %s" % (" ".join(argv), (err or out).strip()[:300]))
    except ValueError as exc:
        return unavailable("cannot read the check-mode output: %s" % exc)


def _read(path, as_json):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle) if as_json else handle.read()
    except (OSError, ValueError) as exc:
        return unavailable("cannot read %s: %s" % (path, exc))


def _when(text, end_of_day=False):
    value = datetime.fromisoformat(text)
    if len(text) == 10 and end_of_day:  # a plain date as --until means the end of that day
        value = value.replace(hour=23, minute=59, second=59)
    return value.isoformat()


def gather(args):
    """The inputs for collect(): from --facts and the per-source files, else from this host."""
    bundle = _read(args.facts, True) if args.facts else {}
    if is_unavailable(bundle):
        raise SystemExit("daskhpc audit: %s" % bundle["unavailable"])
    inputs = dict(bundle)
    since, until = default_period()
    # The scheduler probe records the period it asked sacct for; the report uses the same one.
    scheduler = inputs.get("scheduler")
    period = dict(inputs.get("period") or (scheduler.get("period") if isinstance(scheduler, dict) else None) or {})
    period["since"] = _when(args.since) if args.since else period.get("since", since.isoformat())
    period["until"] = _when(args.until, True) if args.until else period.get("until", until.isoformat())
    inputs["period"] = period
    live = not args.no_live

    local_hosts = []
    if args.site_model or "site" not in inputs:
        model, inventory, local_hosts = load_site_model(args.site_model)
        inputs["site"] = model
        inputs.setdefault("inventory", inventory)
    model = inputs["site"] if isinstance(inputs.get("site"), dict) and not is_unavailable(inputs["site"]) else {}
    python = (model.get("dask") or {}).get("python", "/opt/daskhpc/venv/bin/python")

    inputs.setdefault("collection_version", collection_version())
    if args.host_facts:
        inputs["hosts"] = _read(args.host_facts, True)
    elif "hosts" not in inputs:
        if not live:
            inputs["hosts"] = unavailable("--no-live and no --host-facts")
        else:
            facts = probe.host_facts(python if os.path.exists(python) else None)
            names = local_hosts or [platform.node()]
            inputs["hosts"] = {name: facts for name in names}
            if is_unavailable(inputs.get("inventory")):
                inputs["inventory"] = {name: [] for name in names}
    if args.scheduler_facts:
        inputs["scheduler"] = _read(args.scheduler_facts, True)
    elif "scheduler" not in inputs:
        inputs["scheduler"] = probe.scheduler_facts(period["since"], period["until"]) if live else unavailable(
            "--no-live and no --scheduler-facts")
    if args.ledger:
        inputs["ledger"] = _read(args.ledger, False)
    elif "ledger" not in inputs:
        ca_dir = (model.get("ca") or {}).get("dir", "/etc/daskhpc/ca")
        inputs["ledger"] = probe.ledger(ca_dir) if live else unavailable("--no-live and no --ledger")
    if args.directory:
        inputs["directory"] = _read(args.directory, True)
    elif "directory" not in inputs:
        inputs["directory"] = _directory(model, inputs.get("scheduler"), args) if live else unavailable(
            "--no-live and no --directory")
    if args.drift:
        inputs["drift"] = _read(args.drift, True)
    elif args.check_playbook:
        inputs["drift"] = run_check_mode(args.check_playbook,
                                         args.site_model if args.site_model and os.path.isdir(args.site_model)
                                         else None)
    else:
        inputs.setdefault("drift", unavailable("no --drift file and no --check-playbook given"))
    policy = dict(inputs.get("policy") or {})
    if args.deny_licence:
        policy["deny_licences"] = args.deny_licence
    if args.exempt_package is not None:
        policy["exempt_packages"] = args.exempt_package
    inputs["policy"] = policy
    return inputs


def _directory(model, scheduler, args):
    """Members of every group the model names, and whether each relevant user exists.

    Through LDAP when --ldap-password-file is given, else through the name service (getent).
    """
    groups = sorted({g for p in model.get("partitions") or [] for g in p.get("allow_groups") or []})
    users = set()
    assoc = (scheduler or {}).get("sacctmgr_assoc") if isinstance(scheduler, dict) else None
    if isinstance(assoc, str):
        from daskhpc.core.slurm import parsable2
        users.update(a["User"] for a in parsable2(assoc, probe.ASSOC_FIELDS) if a["User"])
    if args.ldap_password_file:
        from daskhpc.audit.directory import directory_from_ldap
        from daskhpc.core.site_model import validate
        try:
            with open(args.ldap_password_file, encoding="utf-8") as handle:
                password = handle.read().strip()
            return directory_from_ldap(validate(model), groups, users, password, args.ldap_ca)
        except (OSError, SiteModelError) as exc:
            return unavailable("LDAP directory: %s" % exc)
    return probe.directory_facts(groups, sorted(users))


def parser():
    p = argparse.ArgumentParser(prog="daskhpc audit", description="Write the audit reports for auditors.")
    p.add_argument("--site-model", help="YAML/JSON file holding daskhpc_site, or an inventory directory")
    p.add_argument("--output", default="reports", help="directory for the reports (default: reports)")
    p.add_argument("--since", help="start of the usage period, ISO date or time (default: 30 days before --until)")
    p.add_argument("--until", help="end of the period, also when certificates are judged (default: the next "
                   "whole hour)")
    p.add_argument("--formats", default=",".join(FORMATS), help="comma list of %s" % ",".join(FORMATS))
    p.add_argument("--facts", help="JSON bundle of gathered inputs (written by playbooks/audit.yml)")
    p.add_argument("--host-facts", help="JSON {host: facts} from daskhpc/audit/probe.py host")
    p.add_argument("--scheduler-facts", help="JSON from daskhpc/audit/probe.py scheduler")
    p.add_argument("--directory", help="JSON from daskhpc/audit/probe.py directory")
    p.add_argument("--ldap-password-file", help="read the directory over LDAP, binding as ldap.bind_dn with "
                   "the password in this file (default: the name service, getent)")
    p.add_argument("--ldap-ca", default="/etc/daskhpc/tls/ca.pem", help="CA bundle that verifies the LDAP server")
    p.add_argument("--ledger", help="the CA's ledger.jsonl (default: <ca.dir>/ledger.jsonl)")
    p.add_argument("--drift", help="JSON output of a check-mode run with the onprem.daskhpc.drift_json callback")
    p.add_argument("--check-playbook", help="run this playbook with --check --diff to measure drift")
    p.add_argument("--deny-licence", action="append", help="licence pattern to deny (repeat; default GPL*, AGPL*)")
    p.add_argument("--exempt-package", action="append", help="package exempt from the deny list (default daskhpc)")
    p.add_argument("--no-live", action="store_true", help="read no local source: only the given files")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = sorted(set(formats) - set(FORMATS))
    if bad:
        print("daskhpc audit: --formats: unknown %s; use a comma list of %s" % (", ".join(bad), ",".join(FORMATS)),
              file=sys.stderr)
        return 2
    try:
        report = collect(gather(args))
    except ValueError as exc:
        print("daskhpc audit: %s" % exc, file=sys.stderr)
        return 2
    written = render(report, args.output, formats)
    counts = report["summary"]["findings_by_severity"]
    print("audit of %s: %s" % (report["site"]["name"] or "unknown site",
                               ", ".join("%d %s" % (counts[s], s) for s in counts)))
    for fmt in formats:
        paths = written[fmt]
        print("  %-4s %s" % (fmt, paths[0] if len(paths) == 1 else "%s (%d files)" % (os.path.dirname(paths[0]),
                                                                                      len(paths))))
    return 0
