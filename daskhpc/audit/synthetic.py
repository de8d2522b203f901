# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Synthetic, deterministic audit inputs in the sources' own formats (for tests and bench/bench_audit.py)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from daskhpc.audit.probe import ASSOC_FIELDS, QOS_FIELDS, SACCT_FIELDS
from daskhpc.core import site_model


def site(nodes=6, cpus=8):
    """A site model like the lab's, scaled to `nodes` nodes (two thirds compute, one third bigmem)."""
    compute = max(1, nodes * 2 // 3)
    width = len(str(nodes))
    return {
        "name": "synth",
        "scheduler": "slurm",
        "node_groups": [
            {"name": "compute", "nodes": "n[%0*d-%0*d]" % (width, 1, width, compute), "cpus": cpus, "memory_mb": 8000},
            {"name": "bigmem", "nodes": "n[%0*d-%0*d]" % (width, compute + 1, width, nodes), "cpus": cpus,
             "memory_mb": 32000},
        ] if nodes > 1 else [{"name": "compute", "nodes": "n1", "cpus": cpus, "memory_mb": 8000}],
        "groups": [{"name": "datasci"}, {"name": "research"}],
        "partitions": [
            {"name": "prod", "class": "production", "default": True, "node_groups": ["compute"],
             "allow_groups": ["research", "datasci"], "max_time": "2-00:00:00"},
            {"name": "bigmem", "class": "production", "node_groups": ["bigmem" if nodes > 1 else "compute"],
             "allow_groups": ["research"]},
            {"name": "burst", "class": "burst", "node_groups": ["compute", "bigmem"] if nodes > 1 else ["compute"],
             "allow_groups": ["datasci"]},
        ],
        "burst": {"per_user": {"max_cores": 4, "max_jobs": 8, "max_submit_jobs": 50}},
        "ldap": {"uri": "ldaps://ldap.synth", "base_dn": "dc=synth", "user_base": "ou=people,dc=synth",
                 "group_base": "ou=groups,dc=synth"},
    }


def scontrol_text(model, overrides=None):
    """`scontrol show partition --oneliner` for the model's partitions, with per-partition field overrides."""
    lines = []
    for fields in site_model.slurm_partitions(model):
        name = fields["PartitionName"]
        out = {"PartitionName": name, "AllowGroups": fields.get("AllowGroups", "ALL"), "AllowAccounts": "ALL",
               "AllowQos": fields.get("AllowQos", "ALL"), "Default": fields["Default"], "QoS": fields.get("QOS", "N/A"),
               "GraceTime": fields.get("GraceTime", 0), "MaxTime": fields["MaxTime"], "Nodes": fields["Nodes"],
               "PriorityTier": fields["PriorityTier"], "State": "UP", "PreemptMode": fields["PreemptMode"],
               "TotalCPUs": 0}
        out.update((overrides or {}).get(name, {}))
        lines.append(" ".join("%s=%s" % kv for kv in out.items()))
    return "\n".join(lines) + "\n"


def qos_text(model, overrides=None):
    want = site_model.burst_qos(model)
    row = {"Name": want["name"], "Priority": "0", "Preempt": "", "PreemptMode": "cluster", "GraceTime": "00:00:00",
           "MaxTRESPU": want["MaxTRESPerUser"], "MaxJobsPU": str(want["MaxJobsPerUser"]),
           "MaxSubmitPU": str(want["MaxSubmitJobsPerUser"]), "GrpTRES": want["GrpTRES"], "MaxWall": want["MaxWall"],
           "Flags": "DenyOnLimit"}
    row.update(overrides or {})
    normal = dict.fromkeys(QOS_FIELDS.split(","), "")
    normal.update(Name="normal", Priority="0", PreemptMode="cluster", GraceTime="00:00:00")
    return "\n".join("|".join(r[f] for f in QOS_FIELDS.split(",")) for r in (normal, row)) + "\n"


def assoc_text(rows):
    """rows: (account, user, partition, qos)."""
    fields = ASSOC_FIELDS.split(",")
    lines = ["synth|root||||"]
    for account, user, partition, qos in rows:
        record = {"Cluster": "synth", "Account": account, "User": user, "Partition": partition, "QOS": qos,
                  "DefaultQOS": ""}
        lines.append("|".join(record[f] for f in fields))
    return "\n".join(lines) + "\n"


def sacct_text(jobs):
    """jobs: dicts with SACCT_FIELDS keys."""
    return "\n".join("|".join(str(j[f]) for f in SACCT_FIELDS.split(",")) for j in jobs) + "\n"


def certificate_pem(subject_cn, not_before, not_after, key=None, *, serial=None, hash_name="sha256", sans=()):
    """A self-signed certificate (PEM text) and its serial; RSA/ECDSA per the key given."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    serial = serial or x509.random_serial_number()
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(serial).not_valid_before(not_before).not_valid_after(not_after))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), False)
    algorithm = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}[hash_name]
    cert = builder.sign(key, algorithm)
    return cert.public_bytes(serialization.Encoding.PEM).decode(), "%X" % serial


def ledger_line(serial, subject, key_type, not_before, not_after, *, profile="user", requested_by="ansible",
                revoked_at=None, reason=None):
    return json.dumps({"serial": serial, "subject": subject, "sans": [], "key_type": key_type,
                       "not_before": _iso(not_before), "not_after": _iso(not_after), "profile": profile,
                       "requested_by": requested_by, "issued_at": _iso(not_before),
                       "revoked_at": _iso(revoked_at) if revoked_at else None, "revocation_reason": reason},
                      sort_keys=True)


def revocation_line(serial, revoked_at, reason="keyCompromise"):
    return json.dumps({"event": "revoked", "serial": serial, "revoked_at": _iso(revoked_at),
                       "revocation_reason": reason}, sort_keys=True)


def _iso(moment):
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def host_facts(os_name="Debian GNU/Linux 12 (bookworm)", certificates=(), packages=None):
    return {"os": os_name, "versions": {"slurm": "slurm-wlm 22.05.8", "munge": "munge-0.5.15 (2022-06-22)",
                                        "slapd": "OpenLDAP: slapd 2.5.13+dfsg-5", "python": "3.11.2",
                                        "dask": "dask 2024.8.0, distributed 2024.8.0"},
            "certificates": list(certificates),
            "packages": packages if packages is not None else {"unavailable": "not a login node"}}


def package(name, version="1.0", expression="", classifiers=()):
    return {"name": name, "version": version, "license_expression": expression, "license": "",
            "classifiers": list(classifiers)}


def large_site(nodes=5000, users=20000, jobs=100000, until=datetime(2024, 6, 1), seed=7):
    """The benchmark's site: `nodes` hosts, `users` directory users, `jobs` accounting records, 30 days."""
    rng = random.Random(seed)
    model = site(nodes)
    validated = site_model.validate(model)
    since = until - timedelta(days=30)
    names = ["u%05d" % i for i in range(users)]
    datasci = [u for i, u in enumerate(names) if i % 10 < 3]
    research = [u for i, u in enumerate(names) if 3 <= i % 10 < 8]
    assocs = [("burst", u, "", "burst,normal") for u in datasci if rng.random() > 0.01]
    assocs += [("research", u, "", "normal") for u in research]
    assocs += [("burst", "gone%03d" % i, "", "burst") for i in range(20)]  # users who left the directory
    directory = {"source": "synthetic", "groups": {"datasci": datasci, "research": research},
                 "users": {u: True for u in names} | {"gone%03d" % i: False for i in range(20)}}
    parts = ["prod", "bigmem", "burst"]
    span = int((until - since).total_seconds())
    job_rows = []
    for i in range(jobs):
        partition = parts[rng.randrange(3)]
        user = rng.choice(datasci if partition == "burst" else research)
        start = since + timedelta(seconds=rng.randrange(span))
        end = start + timedelta(seconds=rng.randrange(60, 8 * 3600))
        state = "PREEMPTED" if partition == "burst" and rng.random() < 0.05 else "COMPLETED"
        account = "burst" if partition == "burst" else "research"
        job_rows.append({"JobID": str(1000 + i), "User": user, "Account": account,
                         "Partition": partition, "QOS": "burst" if partition == "burst" else "normal", "State": state,
                         "Start": start.strftime("%Y-%m-%dT%H:%M:%S"), "End": end.strftime("%Y-%m-%dT%H:%M:%S"),
                         "ElapsedRaw": int((end - start).total_seconds()), "AllocCPUS": rng.choice((1, 2, 4, 8))})
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    as_of = until.astimezone(timezone.utc)
    hosts, inventory, ledger = {}, {}, []
    node_names = [n for g in validated["node_groups"] for n in g["node_names"]]
    for i, node in enumerate(node_names):
        not_before = as_of - timedelta(days=rng.randrange(1, 62))
        pem, serial = certificate_pem(node, not_before, not_before + timedelta(days=90), key, serial=10**6 + i)
        ledger.append(ledger_line(serial, "CN=%s" % node, "ecdsa-p256", not_before,
                                  not_before + timedelta(days=90), profile="host"))
        hosts[node] = host_facts(certificates=[{"path": "/etc/daskhpc/tls/host.pem", "pem": pem}])
        inventory[node] = ["slurm_compute"]
    for i, user in enumerate(datasci):
        not_before = as_of - timedelta(days=rng.randrange(0, 7))
        ledger.append(ledger_line("%X" % (10**7 + i), "CN=%s" % user, "ecdsa-p256", not_before,
                                  not_before + timedelta(days=7)))
    pkgs = {"pkg%03d" % i: package("pkg%03d" % i, expression="GPL-3.0-only" if i % 50 == 0 else "MIT")
            for i in range(200)}
    for login in ("login1", "login2"):
        hosts[login] = host_facts(packages=pkgs)
        inventory[login] = ["login"]
    return {
        "site": model,
        "inventory": inventory,
        "hosts": hosts,
        "scheduler": {"scontrol_partitions": scontrol_text(validated), "sacctmgr_qos": qos_text(validated),
                      "sacctmgr_assoc": assoc_text(assocs), "sacct": sacct_text(job_rows)},
        "directory": directory,
        "ledger": "\n".join(ledger) + "\n",
        "drift": {"plays": [], "stats": {}},
        "collection_version": "0.1.0",
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "policy": {},
    }
