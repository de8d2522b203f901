"""Validation keeps its promise: every bad model is refused with the field and the fix, never a crash.

One table of bad models: each row is a mutation of the lab's (valid) model and the field path the
refusal must name. Plus: every good model in the repository validates, edge cases that are valid
stay valid, unexpected types anywhere give messages (not exceptions), and oversized inputs
(a 12-million-node range, a "billion laughs" YAML file) are refused instead of hanging.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from daskhpc.core import site_model as sm

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventories/lab/group_vars/all/site.yml"
# The table's rows name fields of this fixed model (emulated nodes with ports included), so it
# does not follow the lab's inventory.
BASE = Path(__file__).parent / "data" / "site_model_table_base.yml"


LAB_MODEL = yaml.safe_load(BASE.read_text())["daskhpc_site"]


def lab():
    return copy.deepcopy(LAB_MODEL)


# --- mutations ---------------------------------------------------------------------

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _steps(path):
    return [int(index) if index else key for key, index in _STEP.findall(path)]


def _parent(site, path):
    steps = _steps(path)
    node = site
    for step in steps[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    return node, steps[-1]


def S(path, value):  # noqa: N802 - reads as a table
    """Set `path` (e.g. ``partitions[0].max_time``) to `value`."""
    def mutate(site):
        node, last = _parent(site, path)
        if isinstance(node, list) and last == len(node):
            node.append(copy.deepcopy(value))  # one entry past the end: a new entry
        else:
            node[last] = copy.deepcopy(value)
        return site
    return mutate


def D(path):  # noqa: N802
    """Delete `path`."""
    def mutate(site):
        node, last = _parent(site, path)
        del node[last]
        return site
    return mutate


def M(*mutations):  # noqa: N802
    """Several mutations, in order."""
    def mutate(site):
        for one in mutations:
            site = one(site)
        return site
    return mutate


def R(value):  # noqa: N802
    """Replace the whole document."""
    return lambda site: copy.deepcopy(value) if not callable(value) else value()


def laughs(levels=10, width=10):
    """A "billion laughs" structure made of shared references (what a YAML alias bomb loads into)."""
    node = ["lol"]
    for _level in range(levels):
        node = [node] * width
    return node


def nested(depth):
    node = []
    for _level in range(depth):
        node = [node]
    return node


BAD = [
    # --- node groups: names and host lists -------------------------------------------------------
    ("node-name-equals", S("node_groups[0].nodes", "n[1-4],x=y"), "node_groups[0].nodes"),
    ("node-name-slash", S("node_groups[0].nodes", "n/1"), "node_groups[0].nodes"),
    ("node-name-newline", S("node_groups[0].nodes", "n[1-4]\nPartitionName=evil"), "node_groups[0].nodes"),
    ("node-name-trailing-newline", S("node_groups[0].nodes", "n[1-4]\n"), "node_groups[0].nodes"),
    ("node-name-space", S("node_groups[0].nodes", "n1, n2"), "node_groups[0].nodes"),
    ("node-name-hash", S("node_groups[0].nodes", "n#1"), "node_groups[0].nodes"),
    ("node-list-trailing-comma", S("node_groups[0].nodes", "n[1-4],"), "node_groups[0].nodes"),
    ("node-list-empty", S("node_groups[0].nodes", ""), "node_groups[0].nodes"),
    ("node-list-missing", D("node_groups[0].nodes"), "node_groups[0].nodes"),
    ("node-list-is-a-list", S("node_groups[0].nodes", ["n1", "n2"]), "node_groups[0].nodes"),
    ("node-list-is-an-int", S("node_groups[0].nodes", 5), "node_groups[0].nodes"),
    ("node-name-DEFAULT", S("node_groups[0].nodes", "DEFAULT"), "node_groups[0].nodes"),
    ("node-name-ALL", S("node_groups[0].nodes", "ALL"), "node_groups[0].nodes"),
    ("node-name-starts-with-digit", S("node_groups[0].nodes", "1n"), "node_groups[0].nodes"),
    ("node-range-reversed", S("node_groups[0].nodes", "n[4-1]"), "node_groups[0].nodes"),
    ("node-range-unclosed", S("node_groups[0].nodes", "n[1-4"), "node_groups[0].nodes"),
    ("node-range-12-million", S("node_groups[0].nodes", "n[1-12000000]"), "node_groups[0].nodes"),
    ("node-ranges-over-the-model-bound", M(S("node_groups[0].nodes", "a[1-60000]"), D("node_groups[0].port"),
                                           D("node_groups[0].hostname"), S("node_groups[1].nodes", "b[1-60000]")),
     "node_groups[1].nodes"),
    ("node-name-too-long", S("node_groups[0].nodes", "n" * 70), "node_groups[0].nodes"),
    ("node-in-two-groups", S("node_groups[1].nodes", "n[4-6]"), "node_groups[1].nodes"),
    ("node-twice-in-one-group", S("node_groups[0].nodes", "n1,n1"), "node_groups[0].nodes"),
    # --- node groups: emulated ports and host names ------------------------------------------------
    ("node-port-above-65535", S("node_groups[0].port", 70000), "node_groups[0].port"),
    ("node-ports-run-past-65535", S("node_groups[0].port", 65534), "node_groups[0].port"),
    ("node-port-zero", S("node_groups[0].port", 0), "node_groups[0].port"),
    ("node-port-bool", S("node_groups[0].port", True), "node_groups[0].port"),
    ("node-port-string", S("node_groups[0].port", "17001"), "node_groups[0].port"),
    ("node-port-without-hostname", D("node_groups[0].hostname"), "node_groups[0].port"),
    ("node-hostname-without-port", D("node_groups[0].port"), "node_groups[0].hostname"),
    ("node-hostname-space", S("node_groups[0].hostname", "local host"), "node_groups[0].hostname"),
    ("node-hostname-newline", S("node_groups[0].hostname", "localhost\n"), "node_groups[0].hostname"),
    ("node-hostname-list", S("node_groups[0].hostname", ["localhost"]), "node_groups[0].hostname"),
    ("node-ports-overlap", S("node_groups[1].port", 17003), "node_groups[1].port"),
    ("node-port-is-the-exporter-port", S("node_groups[0].port", 9815), "node_groups[0].port"),
    ("node-port-is-slurmctld", S("node_groups[0].port", 6817), "node_groups[0].port"),
    ("node-port-is-the-accounting-port", S("node_groups[1].port", 6818), "node_groups[1].port"),
    # --- node groups: sizes, features, names ---------------------------------------------------------
    ("cpus-a-trillion", S("node_groups[0].cpus", 1000000000000), "node_groups[0].cpus"),
    ("cpus-bool", S("node_groups[0].cpus", True), "node_groups[0].cpus"),
    ("cpus-zero", S("node_groups[0].cpus", 0), "node_groups[0].cpus"),
    ("cpus-string", S("node_groups[0].cpus", "8"), "node_groups[0].cpus"),
    ("cpus-float", S("node_groups[0].cpus", 8.5), "node_groups[0].cpus"),
    ("memory-zero", S("node_groups[0].memory_mb", 0), "node_groups[0].memory_mb"),
    ("memory-exabytes", S("node_groups[0].memory_mb", 10**15), "node_groups[0].memory_mb"),
    ("memory-null", S("node_groups[0].memory_mb", None), "node_groups[0].memory_mb"),
    ("features-string", S("node_groups[0].features", "a100"), "node_groups[0].features"),
    ("feature-with-comma", S("node_groups[0].features", ["a,b"]), "node_groups[0].features[0]"),
    ("feature-with-newline", S("node_groups[0].features", ["a100\nx"]), "node_groups[0].features[0]"),
    ("feature-twice", S("node_groups[0].features", ["ib", "ib"]), "node_groups[0].features"),
    ("node-group-name-list", S("node_groups[0].name", ["compute"]), "node_groups[0].name"),
    ("node-group-name-mapping", S("node_groups[0].name", {"a": 1}), "node_groups[0].name"),
    ("node-group-name-upper", S("node_groups[0].name", "Compute"), "node_groups[0].name"),
    ("node-group-name-newline", S("node_groups[0].name", "compute\n"), "node_groups[0].name"),
    ("node-group-name-twice", S("node_groups[1].name", "compute"), "node_groups[1].name"),
    ("node-group-unknown-field", S("node_groups[0].cores", 8), "node_groups[0].cores"),
    ("node-groups-mapping", S("node_groups", {"name": "x"}), "node_groups"),
    ("node-groups-scalar-entry", S("node_groups", [5]), "node_groups[0]"),
    ("node-groups-empty", S("node_groups", []), "node_groups"),
    ("node-groups-missing", D("node_groups"), "node_groups"),
    # --- groups ------------------------------------------------------------------------------------
    ("group-name-newline", S("groups[0].name", "datasci\n"), "groups[0].name"),
    ("group-name-list", S("groups[0].name", ["datasci"]), "groups[0].name"),
    ("group-name-with-comma", S("groups[0].name", "a,b"), "groups[0].name"),
    ("group-description-newline", S("groups[0].description", "Data\ndn: cn=admin"), "groups[0].description"),
    ("group-description-mapping", S("groups[0].description", {"x": 1}), "groups[0].description"),
    ("groups-string", S("groups", "datasci"), "groups"),
    ("group-twice", S("groups[1].name", "datasci"), "groups[1].name"),
    ("group-unknown-field", S("groups[0].gid", 5000), "groups[0].gid"),
    # --- partitions: names, classes, references ------------------------------------------------------
    ("partition-name-trailing-newline", S("partitions[0].name", "prod\n"), "partitions[0].name"),
    ("partition-name-default", S("partitions[0].name", "default"), "partitions[0].name"),
    ("partition-name-DEFAULT", S("partitions[0].name", "DEFAULT"), "partitions[0].name"),
    ("partition-name-equals", S("partitions[0].name", "prod=x"), "partitions[0].name"),
    ("partition-name-list", S("partitions[0].name", ["prod"]), "partitions[0].name"),
    ("partition-name-twice", S("partitions[1].name", "prod"), "partitions[1].name"),
    ("partition-class-list", S("partitions[0].class", ["production"]), "partitions[0].class"),
    ("partition-class-unknown", S("partitions[0].class", "fast"), "partitions[0].class"),
    ("partition-node-groups-nested-list", S("partitions[0].node_groups", [["compute"]]),
     "partitions[0].node_groups"),
    ("partition-node-groups-string", S("partitions[0].node_groups", "compute"), "partitions[0].node_groups"),
    ("partition-node-groups-empty", S("partitions[0].node_groups", []), "partitions[0].node_groups"),
    ("partition-node-groups-unknown", S("partitions[0].node_groups", ["gpu"]), "partitions[0].node_groups"),
    ("partition-node-groups-twice", S("partitions[0].node_groups", ["compute", "compute"]),
     "partitions[0].node_groups"),
    ("allow-groups-string", S("partitions[0].allow_groups", "research"), "partitions[0].allow_groups"),
    ("allow-groups-nested-list", S("partitions[0].allow_groups", [["research"]]), "partitions[0].allow_groups"),
    ("allow-groups-undeclared", S("partitions[0].allow_groups", ["finance"]), "partitions[0].allow_groups"),
    ("allow-groups-twice", S("partitions[0].allow_groups", ["research", "research"]),
     "partitions[0].allow_groups"),
    ("burst-without-allow-groups", S("partitions[2].allow_groups", []), "partitions[2].allow_groups"),
    ("partition-default-string", S("partitions[0].default", "yes"), "partitions[0].default"),
    ("two-default-partitions", S("partitions[1].default", True), "partitions: more than one default"),
    ("burst-partition-default", M(S("partitions[0].default", False), S("partitions[2].default", True)),
     "partitions.burst.default"),
    ("partition-unknown-field", S("partitions[0].MaxTime", "1"), "partitions[0].MaxTime"),
    ("partitions-scalar", S("partitions", 5), "partitions"),
    ("partition-entry-scalar", S("partitions[1]", "bigmem"), "partitions[1]"),
    ("no-production-partition", S("partitions", [{"name": "burst", "class": "burst", "node_groups": ["compute"],
                                                  "allow_groups": ["datasci"]}]),
     "partitions: there is no production partition"),
    ("two-burst-partitions", S("partitions[3]", {"name": "burst2", "class": "burst", "node_groups": ["compute"],
                                                 "allow_groups": ["datasci"]}),
     "partitions: more than one burst partition"),
    # --- partitions: times and tiers ---------------------------------------------------------------
    ("max-time-zero", S("partitions[0].max_time", 0), "partitions[0].max_time"),
    ("max-time-zero-string", S("partitions[0].max_time", "0"), "partitions[0].max_time"),
    ("max-time-zero-hms", S("partitions[0].max_time", "00:00:00"), "partitions[0].max_time"),
    ("max-time-99-99-99", S("partitions[0].max_time", "99:99:99"), "partitions[0].max_time"),
    ("max-time-24-hours-after-days", S("partitions[0].max_time", "1-24:00:00"), "partitions[0].max_time"),
    ("max-time-60-seconds", S("partitions[0].max_time", "10:60"), "partitions[0].max_time"),
    ("max-time-words", S("partitions[0].max_time", "forever"), "partitions[0].max_time"),
    ("max-time-newline", S("partitions[0].max_time", "2-00:00:00\nPartitionName=x"), "partitions[0].max_time"),
    ("max-time-over-a-year", S("partitions[0].max_time", "999-00:00:00"), "partitions[0].max_time"),
    ("max-time-bool", S("partitions[0].max_time", True), "partitions[0].max_time"),
    ("max-time-negative", S("partitions[0].max_time", -5), "partitions[0].max_time"),
    ("max-time-list", S("partitions[0].max_time", ["1"]), "partitions[0].max_time"),
    ("burst-max-time-shorter-than-walltime", S("partitions[2].max_time", "01:00:00"), "partitions.burst.max_time"),
    ("priority-tier-zero", S("partitions[0].priority_tier", 0), "partitions[0].priority_tier"),
    ("priority-tier-above-16-bit", S("partitions[0].priority_tier", 70000), "partitions[0].priority_tier"),
    ("priority-tier-bool", S("partitions[0].priority_tier", True), "partitions[0].priority_tier"),
    ("priority-tier-string", S("partitions[0].priority_tier", "10"), "partitions[0].priority_tier"),
    ("burst-tier-not-below-production", S("partitions[2].priority_tier", 10), "partitions.burst.priority_tier"),
    # --- top level ---------------------------------------------------------------------------------
    ("cluster-name-newline", S("name", "lab\nClusterName=evil"), "name"),
    ("cluster-name-trailing-newline", S("name", "lab\n"), "name"),
    ("cluster-name-list", S("name", ["lab"]), "name"),
    ("cluster-name-upper", S("name", "Lab"), "name"),
    ("scheduler-list", S("scheduler", ["slurm"]), "scheduler"),
    ("scheduler-unknown", S("scheduler", "lsf"), "scheduler"),
    ("top-level-unknown-field", S("nodes", 5), "daskhpc_site.nodes"),
    ("top-level-unknown-field-with-newline", S("nodes\nx", 5), "daskhpc_site.'nodes\\nx'"),
    # --- burst -------------------------------------------------------------------------------------
    ("burst-qos-normal", S("burst.qos", "normal"), "burst.qos"),
    ("burst-qos-newline", S("burst.qos", "burst\n"), "burst.qos"),
    ("burst-qos-comma", S("burst.qos", "burst,normal"), "burst.qos"),
    ("burst-qos-list", S("burst.qos", ["burst"]), "burst.qos"),
    ("burst-account-root", S("burst.account", "root"), "burst.account"),
    ("burst-account-newline", S("burst.account", "burst\nroot"), "burst.account"),
    ("burst-account-comma", S("burst.account", "a,b"), "burst.account"),
    ("grace-time-ten-billion", S("burst.grace_time", 10000000000), "burst.grace_time"),
    ("grace-time-negative", S("burst.grace_time", -1), "burst.grace_time"),
    ("grace-time-bool", S("burst.grace_time", True), "burst.grace_time"),
    ("grace-time-string", S("burst.grace_time", "60"), "burst.grace_time"),
    ("grace-time-not-below-walltime", M(S("burst.grace_time", 7200), S("burst.max_walltime", "01:00:00")),
     "burst.grace_time"),
    ("walltime-99-99-99", S("burst.max_walltime", "99:99:99"), "burst.max_walltime"),
    ("walltime-unlimited", S("burst.max_walltime", "UNLIMITED"), "burst.max_walltime"),
    ("walltime-zero", S("burst.max_walltime", "00:00:00"), "burst.max_walltime"),
    ("walltime-int-zero", S("burst.max_walltime", 0), "burst.max_walltime"),
    ("walltime-hours-suffix", S("burst.max_walltime", "4h"), "burst.max_walltime"),
    ("share-nan", S("burst.max_share_percent", float("nan")), "burst.max_share_percent"),
    ("share-infinite", S("burst.max_share_percent", float("inf")), "burst.max_share_percent"),
    ("share-string", S("burst.max_share_percent", "50"), "burst.max_share_percent"),
    ("per-user-scalar", S("burst.per_user", 5), "burst.per_user"),
    ("per-user-list", S("burst.per_user", [1, 2]), "burst.per_user"),
    ("per-user-max-cores-bool", S("burst.per_user.max_cores", True), "burst.per_user.max_cores"),
    ("per-user-max-jobs-zero", S("burst.per_user.max_jobs", 0), "burst.per_user.max_jobs"),
    ("per-user-max-jobs-a-trillion", S("burst.per_user.max_jobs", 10**12), "burst.per_user.max_jobs"),
    ("per-user-max-submit-string", S("burst.per_user.max_submit_jobs", "200"), "burst.per_user.max_submit_jobs"),
    ("per-user-unknown-field", S("burst.per_user.max_memory", "1TiB"), "burst.per_user.max_memory"),
    ("burst-scalar", S("burst", 5), "burst"),
    ("burst-list", S("burst", ["qos"]), "burst"),
    # --- accounting --------------------------------------------------------------------------------
    ("accounting-host-newline", S("accounting.host", "localhost\nStorageHost=evil"), "accounting.host"),
    ("accounting-host-space", S("accounting.host", "db host"), "accounting.host"),
    ("accounting-host-list", S("accounting.host", ["localhost"]), "accounting.host"),
    ("accounting-database-newline", S("accounting.database", "slurm_acct_db\nStorageUser=root"),
     "accounting.database"),
    ("accounting-database-dash", S("accounting.database", "slurm-acct"), "accounting.database"),
    ("accounting-database-int", S("accounting.database", 5), "accounting.database"),
    ("accounting-port-above-65535", S("accounting.port", 70000), "accounting.port"),
    ("accounting-port-bool", S("accounting.port", True), "accounting.port"),
    ("accounting-port-is-slurmctld", S("accounting.port", 6817), "accounting.port"),
    # --- ldap --------------------------------------------------------------------------------------
    ("ldap-uri-newline", S("ldap.uri", "ldap://127.0.0.1:389\nBASE dc=evil"), "ldap.uri"),
    ("ldap-uri-http", S("ldap.uri", "http://ldap.example.org"), "ldap.uri"),
    ("ldap-uri-two-uris", S("ldap.uri", "ldap://a ldap://b"), "ldap.uri"),
    ("ldap-uri-port-above-65535", S("ldap.uri", "ldap://ldap.example.org:99999"), "ldap.uri"),
    ("ldap-uri-list", S("ldap.uri", ["ldap://a"]), "ldap.uri"),
    ("ldap-base-dn-newline", S("ldap.base_dn", "dc=lab,dc=daskhpc\nx"), "ldap.base_dn"),
    ("ldap-base-dn-not-a-dn", S("ldap.base_dn", "lab.daskhpc"), "ldap.base_dn"),
    ("ldap-base-dn-int", S("ldap.base_dn", 5), "ldap.base_dn"),
    ("ldap-base-dn-missing", S("ldap.base_dn", None), "ldap.base_dn"),
    ("ldap-user-base-newline", S("ldap.user_base", "ou=people,dc=lab,dc=daskhpc\n"), "ldap.user_base"),
    ("ldap-user-base-outside-base", S("ldap.user_base", "ou=people,dc=other"), "ldap.user_base"),
    ("ldap-group-base-empty-rdn", S("ldap.group_base", "ou=groups,,dc=lab,dc=daskhpc"), "ldap.group_base"),
    ("ldap-bind-dn-newline", S("ldap.bind_dn", "cn=reader,dc=lab,dc=daskhpc\nx"), "ldap.bind_dn"),
    ("ldap-bind-dn-unescaped-comma", S("ldap.bind_dn", "cn=a,b,dc=lab,dc=daskhpc"), "ldap.bind_dn"),
    ("ldap-start-tls-string", S("ldap.start_tls", "yes"), "ldap.start_tls"),
    ("ldap-group-schema-unknown", S("ldap.group_schema", "memberOf"), "ldap.group_schema"),
    ("ldap-schema-unknown", S("ldap.schema", "openldap"), "ldap.schema"),
    ("ldap-schema-int", S("ldap.schema", 2307), "ldap.schema"),
    # memberUid cannot name groups: groupOfNames needs rfc2307bis, and AD's groups are neither.
    ("ldap-rfc2307-with-group-of-names", S("ldap.group_schema", "groupOfNames"), "ldap.group_schema"),
    ("ldap-ad-with-posix-group", M(S("ldap.schema", "ad"), S("ldap.group_schema", "posixGroup")),
     "ldap.group_schema"),
    ("ldap-samaccountname-outside-ad", S("ldap.login_attribute", "sAMAccountName"), "ldap.login_attribute"),
    ("ldap-login-attribute-cn", M(S("ldap.schema", "ad"), S("ldap.login_attribute", "cn")), "ldap.login_attribute"),
    ("ldap-ad-without-tls", M(S("ldap.schema", "ad"), S("ldap.start_tls", False)), "ldap.start_tls"),
    ("ldap-ad-anonymous", M(S("ldap.schema", "ad"), S("ldap.bind_dn", "")), "ldap.bind_dn"),
    ("ldap-cache-seconds-too-short", S("ldap.cache_seconds", 5), "ldap.cache_seconds"),
    ("ldap-cache-seconds-a-week", S("ldap.cache_seconds", 7 * 86400), "ldap.cache_seconds"),
    ("ldap-cache-seconds-bool", S("ldap.cache_seconds", True), "ldap.cache_seconds"),
    ("ldap-cache-seconds-string", S("ldap.cache_seconds", "300"), "ldap.cache_seconds"),
    ("ldap-scalar", S("ldap", 5), "ldap"),
    # --- ca ----------------------------------------------------------------------------------------
    ("ca-name-newline", S("ca.name", "lab CA\nCN=evil"), "ca.name"),
    ("ca-name-too-long", S("ca.name", "x" * 65), "ca.name"),
    ("ca-name-int", S("ca.name", 5), "ca.name"),
    ("ca-dir-relative", S("ca.dir", "ca"), "ca.dir"),
    ("ca-dir-root", S("ca.dir", "/"), "ca.dir"),
    ("ca-dir-etc", S("ca.dir", "/etc"), "ca.dir"),
    ("ca-dir-dot-dot", S("ca.dir", "/etc/daskhpc/../.."), "ca.dir"),
    ("ca-dir-newline", S("ca.dir", "/etc/daskhpc/ca\n"), "ca.dir"),
    ("ca-dir-space", S("ca.dir", "/etc/my ca"), "ca.dir"),
    ("ca-key-type-unknown", S("ca.key_type", "dsa-1024"), "ca.key_type"),
    ("ca-key-type-list", S("ca.key_type", ["ed25519"]), "ca.key_type"),
    ("host-cert-days-equal-renewal", S("ca.host_cert_days", 2), "ca.host_cert_days"),
    ("host-cert-days-below-renewal", S("ca.host_cert_days", 1), "ca.host_cert_days"),
    ("user-cert-days-equal-renewal", S("ca.user_cert_days", 2), "ca.renew_before_days"),
    ("host-cert-days-too-many", S("ca.host_cert_days", 100000), "ca.host_cert_days"),
    ("user-cert-days-too-many", S("ca.user_cert_days", 10000), "ca.user_cert_days"),
    ("renew-before-days-zero", S("ca.renew_before_days", 0), "ca.renew_before_days"),
    ("host-cert-days-bool", S("ca.host_cert_days", True), "ca.host_cert_days"),
    ("user-cert-days-string", S("ca.user_cert_days", "7"), "ca.user_cert_days"),
    # --- metrics -----------------------------------------------------------------------------------
    ("prometheus-port-is-the-exporter-port", S("metrics.prometheus_port", 9817), "metrics.prometheus_port"),
    ("exporter-port-is-the-accounting-port", S("metrics.exporter_port", 6819), "metrics.exporter_port"),
    ("prometheus-port-is-the-accounting-port", S("metrics.prometheus_port", 6819), "metrics.prometheus_port"),
    ("exporter-port-is-slurmd", S("metrics.exporter_port", 6818), "metrics.exporter_port"),
    ("exporter-port-is-an-emulated-node", S("metrics.exporter_port", 17002), "node_groups[0].port"),
    ("exporter-port-above-65535", S("metrics.exporter_port", 70000), "metrics.exporter_port"),
    ("prometheus-port-zero", S("metrics.prometheus_port", 0), "metrics.prometheus_port"),
    ("exporter-port-bool", S("metrics.exporter_port", True), "metrics.exporter_port"),
    ("scrape-interval-zero", S("metrics.scrape_interval", "0s"), "metrics.scrape_interval"),
    ("scrape-interval-int-zero", S("metrics.scrape_interval", 0), "metrics.scrape_interval"),
    ("scrape-interval-int", S("metrics.scrape_interval", 30), "metrics.scrape_interval"),
    ("scrape-interval-unit", S("metrics.scrape_interval", "30x"), "metrics.scrape_interval"),
    ("scrape-interval-newline", S("metrics.scrape_interval", "30s\n"), "metrics.scrape_interval"),
    ("scrape-interval-over-an-hour", S("metrics.scrape_interval", "2h"), "metrics.scrape_interval"),
    ("dask-targets-dir-relative", S("metrics.dask_targets_dir", "dask-targets"), "metrics.dask_targets_dir"),
    ("dask-targets-dir-root", S("metrics.dask_targets_dir", "/"), "metrics.dask_targets_dir"),
    ("dask-targets-dir-newline", S("metrics.dask_targets_dir", "/var/lib/x\n"), "metrics.dask_targets_dir"),
    # --- dask --------------------------------------------------------------------------------------
    ("worker-memory-zero", S("dask.worker_memory", 0), "dask.worker_memory"),
    ("worker-memory-zero-gib", S("dask.worker_memory", "0GiB"), "dask.worker_memory"),
    ("worker-memory-words", S("dask.worker_memory", "lots"), "dask.worker_memory"),
    ("worker-memory-bool", S("dask.worker_memory", True), "dask.worker_memory"),
    ("worker-memory-5000-tib", S("dask.worker_memory", "5000TiB"), "dask.worker_memory"),
    ("worker-memory-newline", S("dask.worker_memory", "2GiB\n"), "dask.worker_memory"),
    ("worker-cores-zero", S("dask.worker_cores", 0), "dask.worker_cores"),
    ("worker-cores-bool", S("dask.worker_cores", True), "dask.worker_cores"),
    ("worker-cores-a-trillion", S("dask.worker_cores", 10**12), "dask.worker_cores"),
    ("dask-tls-none", S("dask.tls", "none"), "dask.tls"),
    ("dask-tls-list", S("dask.tls", ["required"]), "dask.tls"),
    ("dask-python-relative", S("dask.python", "python3"), "dask.python"),
    ("dask-python-newline", S("dask.python", "/opt/daskhpc/venv/bin/python\nrm -rf /"), "dask.python"),
    ("dask-interface-space", S("dask.interface", "eth 0"), "dask.interface"),
    ("dask-interface-too-long", S("dask.interface", "x" * 16), "dask.interface"),
    ("dask-contact-newline", S("dask.contact", "admins\n#SBATCH --qos=normal"), "dask.contact"),
    ("dask-contact-int", S("dask.contact", 5), "dask.contact"),
    ("dask-packages-string", S("dask.packages", "pandas"), "dask.packages"),
    ("dask-packages-url", S("dask.packages", ["pandas", "https://example.org/x.whl"]), "dask.packages[1]"),
    ("dask-packages-option", S("dask.packages", ["--index-url=http://evil"]), "dask.packages[0]"),
    ("dask-packages-newline", S("dask.packages", ["pandas\nnumpy"]), "dask.packages[0]"),
    ("dask-scalar", S("dask", "x"), "dask"),
    ("jupyterhub-scalar", S("jupyterhub", "on"), "jupyterhub"),
    ("jupyterhub-unknown-field", S("jupyterhub.authenticator", "dummy"), "jupyterhub.authenticator"),
    ("jupyterhub-enabled-string", S("jupyterhub.enabled", "yes"), "jupyterhub.enabled"),
    ("jupyterhub-port-zero", S("jupyterhub.port", 0), "jupyterhub.port"),
    ("jupyterhub-port-string", S("jupyterhub.port", "8443"), "jupyterhub.port"),
    ("jupyterhub-port-is-prometheus", S("jupyterhub.port", 9090), "jupyterhub.port"),
    ("jupyterhub-port-is-slurmctld", S("jupyterhub.port", 6817), "jupyterhub.port"),
    ("jupyterhub-packages-option", S("jupyterhub.packages", ["jupyterhub", "--index-url=http://evil"]),
     "jupyterhub.packages[1]"),
    ("jupyterhub-packages-string", S("jupyterhub.packages", "jupyterhub"), "jupyterhub.packages"),
    ("jupyterhub-without-jupyterhub", M(S("jupyterhub.enabled", True), S("jupyterhub.packages", ["jupyterlab"])),
     "jupyterhub.packages"),
    ("jupyterhub-without-burst-groups", M(S("jupyterhub.enabled", True), D("partitions[2].allow_groups")),
     "jupyterhub.enabled"),
    # --- whole documents ---------------------------------------------------------------------------
    ("null-document", R(None), "daskhpc_site"),
    ("list-document", R([{"name": "lab"}]), "daskhpc_site"),
    ("string-document", R("daskhpc_site"), "daskhpc_site"),
    ("deeply-nested-value", S("groups", nested(200)), "daskhpc_site"),
    ("alias-bomb-in-memory", S("groups", laughs()), "daskhpc_site"),
]


def test_the_table_is_large_and_its_ids_are_unique():
    ids = [row[0] for row in BAD]
    assert len(ids) >= 100
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(("mutation", "field"), [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_bad_model_is_refused_naming_the_field_and_the_fix(mutation, field):
    site = mutation(lab())
    with pytest.raises(sm.SiteModelError) as info:
        sm.validate(site)
    errors = info.value.errors
    assert errors
    assert any(e.startswith(field) for e in errors), "no error names %s:\n%s" % (field, "\n".join(errors))
    for error in errors:
        assert re.match(r"^[\w.\[\]'\\-]+: .+\. Fix: .+", error), error
        assert "\n" not in error, "a raw newline reached the message: %r" % error


def test_all_problems_are_reported_at_once():
    site = M(S("name", "lab\n"), S("node_groups[0].cpus", True), S("partitions[0].max_time", 0),
             S("burst.qos", "normal"), S("ca.dir", "/"), S("metrics.scrape_interval", "0s"))(lab())
    with pytest.raises(sm.SiteModelError) as info:
        sm.validate(site)
    fields = {e.split(":")[0] for e in info.value.errors}
    assert {"name", "node_groups[0].cpus", "partitions[0].max_time", "burst.qos", "ca.dir",
            "metrics.scrape_interval"} <= fields


# --- good models stay good -------------------------------------------------------------------------


def repository_models():
    """Every YAML file in the repository that holds a daskhpc_site."""
    found = []
    for path in sorted(REPO.glob("**/*.yml")) + sorted(REPO.glob("**/*.yaml")):
        parts = path.relative_to(REPO).parts
        if parts[0].startswith(".") or "build" in parts[:1]:
            continue
        text = path.read_text(errors="replace")
        if re.search(r"^daskhpc_site:", text, re.MULTILINE):
            found.append(str(path.relative_to(REPO)))
    return found


def test_the_repository_has_site_models():
    assert {"inventories/lab/group_vars/all/site.yml", "inventories/example-site/group_vars/all/site.yml",
            "inventories/example-pbs/group_vars/all/site.yml"} <= set(repository_models())


@pytest.mark.parametrize("path", repository_models())
def test_every_site_model_in_the_repository_validates(path):
    document = sm.load_site_file(REPO / path)
    model = sm.validate(document["daskhpc_site"])
    assert model["partitions"] and model["total_cores"] > 0


@pytest.mark.parametrize("nodes", [1, 2, 6, 300])
def test_synthetic_audit_models_validate(nodes):
    from daskhpc.audit import synthetic

    assert sm.validate(synthetic.site(nodes))["total_cores"] == nodes * 8


GOOD = [
    ("max-time-days", S("partitions[0].max_time", "2-00:00:00")),
    ("max-time-hms", S("partitions[0].max_time", "04:00:00")),
    ("max-time-one-day", S("partitions[0].max_time", "1-00:00:00")),
    ("max-time-days-hours", S("partitions[0].max_time", "2-12")),
    ("max-time-days-hours-minutes", S("partitions[0].max_time", "1-23:59")),
    ("max-time-last-second-of-a-day", S("partitions[0].max_time", "1-23:59:59")),
    ("max-time-minutes-string", S("partitions[0].max_time", "30")),
    ("max-time-minutes-int", S("partitions[0].max_time", 90)),
    ("max-time-minutes-seconds", S("partitions[0].max_time", "10:30")),
    ("max-time-many-hours", S("partitions[0].max_time", "100:00:00")),
    ("max-time-unlimited", S("partitions[0].max_time", "UNLIMITED")),
    ("max-time-infinite", S("partitions[0].max_time", "INFINITE")),
    ("max-time-a-year", S("partitions[0].max_time", "365-00:00:00")),
    ("walltime-days", S("burst.max_walltime", "1-00:00:00")),
    ("grace-time-zero", S("burst.grace_time", 0)),
    ("share-float", S("burst.max_share_percent", 37.5)),
    ("no-emulation", M(D("node_groups[0].hostname"), D("node_groups[0].port"), D("node_groups[1].hostname"),
                       D("node_groups[1].port"))),
    ("emulation-on-a-named-host", M(S("node_groups[0].hostname", "node-host.example.org"))),
    ("emulation-ports-up-to-65535", S("node_groups[1].port", 65534)),
    ("features", S("node_groups[0].features", ["a100", "ib", "skylake-sp", "gpu_v1.2"])),
    ("features-null", S("node_groups[0].features", None)),
    ("node-list-mixed", M(S("node_groups[0].nodes", "n[1-2,4],login1,x.y-z_1"),
                          S("node_groups[1].nodes", "n[05-06]"), S("node_groups[1].port", 17010))),
    ("nodes-at-the-bound", M(S("node_groups[0].nodes", "a[1-99998]"), D("node_groups[0].hostname"),
                             D("node_groups[0].port"))),
    ("group-without-description", D("groups[0].description")),
    ("group-description-null", S("groups[0].description", None)),
    ("no-groups-on-production", D("partitions[0].allow_groups")),
    ("no-ldap", D("ldap")),
    ("ldap-without-bind-dn", D("ldap.bind_dn")),
    ("ldap-bind-dn-empty", S("ldap.bind_dn", "")),
    ("ldaps-ipv6", S("ldap.uri", "ldaps://[::1]:636")),
    ("ldap-dn-escapes", S("ldap.bind_dn", r"cn=Reader\, Lab+uid=r1,ou=service\20accounts,dc=lab,dc=daskhpc")),
    ("ldap-plain-without-starttls", S("ldap.start_tls", False)),
    ("group-of-names", M(S("ldap.schema", "rfc2307bis"), S("ldap.group_schema", "groupOfNames"))),
    ("rfc2307bis", S("ldap.schema", "rfc2307bis")),
    ("ad", M(S("ldap.schema", "ad"), S("ldap.uri", "ldaps://ad.lab.daskhpc"))),
    ("ad-starttls-uid-login", M(S("ldap.schema", "ad"), S("ldap.login_attribute", "uid"))),
    ("ad-group-schema-named", M(S("ldap.schema", "ad"), S("ldap.group_schema", "group"))),
    ("cache-seconds-shortest", S("ldap.cache_seconds", 30)),
    ("cache-seconds-a-day", S("ldap.cache_seconds", 86400)),
    ("accounting-ip", S("accounting.host", "10.0.0.5")),
    ("accounting-defaults", D("accounting")),
    ("ca-defaults", D("ca")),
    ("ca-other-dir", S("ca.dir", "/srv/pki/daskhpc-ca")),
    ("ca-rsa", S("ca.key_type", "rsa-3072")),
    ("long-host-certs", S("ca.host_cert_days", 825)),
    ("scrape-minute", S("metrics.scrape_interval", "1m")),
    ("scrape-hour", S("metrics.scrape_interval", "1h")),
    ("worker-memory-bytes", S("dask.worker_memory", 2 * 1024**3)),
    ("worker-memory-megabytes", S("dask.worker_memory", "500MB")),
    ("worker-memory-fraction", S("dask.worker_memory", "1.5GiB")),
    ("no-interface", S("dask.interface", None)),
    ("interface-with-dot", S("dask.interface", "ib0.8001")),
    ("no-contact", S("dask.contact", None)),
    ("tls-optional", S("dask.tls", "optional")),
    ("pbs", S("scheduler", "pbs")),
    ("jupyterhub-on", S("jupyterhub.enabled", True)),
    ("jupyterhub-pinned", M(S("jupyterhub.enabled", True), S("jupyterhub.port", 443),
                            S("jupyterhub.packages", ["jupyterhub==5.3.0", "jupyterlab>=4"]))),
    ("all-defaults", M(D("burst"), D("accounting"), D("ldap"), D("ca"), D("metrics"), D("dask"))),
]


@pytest.mark.parametrize("mutation", [row[1] for row in GOOD], ids=[row[0] for row in GOOD])
def test_valid_edge_cases_stay_valid(mutation):
    sm.validate(mutation(lab()))


def test_validated_output_is_unchanged_for_the_lab():
    model = sm.validate(lab())
    assert [p["max_time"] for p in model["partitions"]] == ["2-00:00:00", "1-00:00:00", "04:00:00"]
    assert [p["max_time_minutes"] for p in model["partitions"]] == [2880, 1440, 240]
    assert [g["node_names"] for g in model["node_groups"]] == [["n1", "n2", "n3", "n4"], ["n5", "n6"]]
    assert model["accounting"] == {"host": "localhost", "port": 6819, "database": "slurm_acct_db"}
    assert model["ca"]["name"] == "daskhpc lab CA"
    assert sm.emulated_nodes(model)[-1] == {"name": "n6", "port": 17006}
    # The directory's schema and what follows from it.
    assert (model["ldap"]["schema"], model["ldap"]["group_schema"], model["ldap"]["login_attribute"]) == (
        "rfc2307", "posixGroup", "uid")


def test_ad_implies_its_group_class_and_login_name():
    site = lab()
    site["ldap"]["schema"] = "ad"
    model = sm.validate(site)
    assert (model["ldap"]["group_schema"], model["ldap"]["login_attribute"]) == ("group", "sAMAccountName")


def test_the_leaver_bound_is_split_so_the_caches_together_stay_within_it():
    site = lab()
    site["ldap"]["cache_seconds"] = 301
    caches = sm.leaver_caches(sm.validate(site))
    assert sum(caches.values()) <= 301
    assert min(caches.values()) >= 10


# --- never an exception, whatever the types ----------------------------------------------------


def leaf_paths(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            path = "%s.%s" % (prefix, key) if prefix else key
            yield path
            yield from leaf_paths(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            path = "%s[%d]" % (prefix, i)
            yield path
            yield from leaf_paths(value, path)


# Fields the lab's model leaves out (their defaults apply), and whole sections.
ABSENT_PATHS = ["node_groups[0].features", "partitions[0].priority_tier", "partitions[2].max_time",
                "partitions[2].default", "groups[0].description", "node_groups[2]", "partitions[3]", "groups[2]"]

ODD_VALUES = [None, True, 0, -1, 10**30, 1.5, float("nan"), "", "x\ny", "DEFAULT", [], [[]], [None], {}, {"a": []}]


@pytest.mark.parametrize("value", ODD_VALUES, ids=[repr(v) for v in ODD_VALUES])
def test_any_value_anywhere_gives_messages_not_exceptions(value):
    base = lab()
    for path in list(leaf_paths(base)) + ABSENT_PATHS:
        site = S(path, value)(lab())
        try:
            sm.validate(site)
        except sm.SiteModelError as exc:
            assert all(". Fix: " in e for e in exc.errors), (path, exc.errors)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail("validate raised %s for %s = %r: %s" % (type(exc).__name__, path, value, exc))


# --- size bounds ---------------------------------------------------------------------------------


def test_a_twelve_million_node_range_is_refused_without_expanding_it():
    site = S("node_groups[0].nodes", "n[1-12000000]")(lab())
    with pytest.raises(sm.SiteModelError) as info:
        sm.validate(site)
    assert any(e.startswith("node_groups[0].nodes: names 12000000 nodes") for e in info.value.errors)
    with pytest.raises(ValueError, match="more than"):
        sm.expand_hostlist("n[1-12000000]")
    assert sm.hostlist_size("n[1-12000000],x1") == 12000001


BILLION_LAUGHS = """\
daskhpc_site:
  name: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

FEW_ALIASES_MANY_VALUES = "daskhpc_site:\n  a0: &a0 [" + ",".join(["x"] * 64) + "]\n" + "".join(
    "  a%d: &a%d [*a%d, *a%d, *a%d, *a%d]\n" % (i, i, i - 1, i - 1, i - 1, i - 1) for i in range(1, 12))


@pytest.mark.parametrize(("text", "problem"), [
    (BILLION_LAUGHS, "YAML aliases"),
    (FEW_ALIASES_MANY_VALUES, "more than %d values" % sm.MAX_VALUES),
    ("a: " + "[" * 5000 + "]" * 5000, "nests more than"),
    ("daskhpc_site: !!python/object/apply:os.system [echo hi]", "is not valid YAML"),
    ("daskhpc_site: [unclosed", "is not valid YAML"),
    ("x" * (sm.MAX_FILE_BYTES + 1), "is larger than"),
])
def test_dangerous_site_files_are_refused(tmp_path, text, problem):
    path = tmp_path / "site.yml"
    path.write_text(text)
    with pytest.raises(sm.SiteModelError) as info:
        sm.load_site_file(path)
    (error,) = info.value.errors
    assert error.startswith(str(path) + ": ") and problem in error and "Fix: " in error


def test_the_billion_laughs_structure_is_refused_by_validate_too():
    with pytest.raises(sm.SiteModelError, match="more than %d values" % sm.MAX_VALUES):
        sm.validate(dict(lab(), groups=laughs(9, 9)))


def test_a_missing_site_file_is_a_site_model_error(tmp_path):
    with pytest.raises(sm.SiteModelError, match="cannot be read"):
        sm.load_site_file(tmp_path / "missing.yml")


def test_the_loader_reads_a_normal_site_file():
    assert sm.load_site_file(BASE)["daskhpc_site"] == lab()


def test_every_field_has_a_row_in_the_grammar_table():
    text = (REPO / "docs/site-model.md").read_text()
    table = text[text.index("## Grammar and ranges"):]
    table = table[:table.index("\n## ", 5)] if "\n## " in table[5:] else table
    fields = ["`name`", "`scheduler`", "`node_groups[].name`", "`node_groups[].nodes`", "`partitions[].name`",
              "`groups[].description`"]
    fields += ["`node_groups[].%s`" % k for k in ("cpus", "memory_mb", *sm.NODE_GROUP_DEFAULTS)]
    fields += ["`partitions[].%s`" % k for k in ("class", "node_groups", *sm.PARTITION_DEFAULTS)]
    for defaults in sm.SECTION_DEFAULTS.values():
        for key in defaults:
            if key == "per_user":
                fields += [".%s`" % k for k in defaults["per_user"]]
            else:
                fields.append(".%s`" % key)
    missing = [f for f in fields if f not in table]
    assert not missing, missing
