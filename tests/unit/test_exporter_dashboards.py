"""The Grafana dashboards: valid JSON, valid PromQL, and only metrics that something produces."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daskhpc.exporter.server import build_registry

from debian_promtool import find_promtool
from test_exporter import CONFIG, DATA

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "roles" / "prometheus" / "files" / "dashboards").glob("*.json"))
# Metrics Dask itself serves on each scheduler's dashboard port, JupyterHub on /hub/metrics, and Prometheus's `up`.
EXTERNAL = {"up", "dask_scheduler_workers", "dask_scheduler_tasks", "jupyterhub_running_servers",
            "jupyterhub_active_users"}
PROMQL_WORDS = {"sum", "by", "min", "max", "count", "rate", "increase", "time", "vector", "or", "and", "on",
                "group_left", "instance", "partition", "user", "cluster_id", "source", "state"}


def expressions(path):
    return [t["expr"] for p in json.loads(path.read_text())["panels"] for t in p["targets"]]


def produced_names(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command, data in (("squeue", "squeue.txt"), ("sinfo", "sinfo.txt"), ("sdiag", "sdiag.txt"),
                          ("sacct", "sacct.txt")):
        script = bin_dir / command
        script.write_text("#!/bin/sh\ncat %s/%s\n" % (DATA, data))
        script.chmod(0o755)
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps({"serial": "01", "subject": "CN=x", "profile": "service",
                                  "not_after": "2999-01-01T00:00:00Z"}) + "\n")
    registry = build_registry(dict(CONFIG, slurm_bin_dir=str(bin_dir), ledger_path=str(ledger)))
    names = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        names.update(sample.name for sample in family.samples)
    rules = (REPO / "roles" / "prometheus" / "templates" / "daskhpc-recording.yml.j2").read_text()
    names.update(re.findall(r"record: (\S+)", rules))
    return names | EXTERNAL


def test_two_dashboards_with_unique_uids():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == 2 and len(set(uids)) == 2


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_use_existing_metrics(path, tmp_path):
    names = produced_names(tmp_path)
    for expr in expressions(path):
        without_strings = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', "", expr)
        for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings):
            if word not in PROMQL_WORDS:
                assert word in names, "%s: %r is not produced by the exporter, the rules or Dask" % (path.name, word)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_are_valid_promql(path, tmp_path):
    # promtool has no offline query parser, but it parses every recording rule's expression
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:q%d" % i, "expr": expr} for i, expr in enumerate(expressions(path))]}]}
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([find_promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
