"""promtool on the Prometheus configuration and rules the prometheus role installs.

The rule templates and prometheus.yml are rendered from the lab's site model with the same
filters and delimiters the role uses, then checked with `promtool check config|rules` and unit
tested with `promtool test rules` (tests/promtool/*_test.yml, one test per alert at least).
promtool is Debian's (tests/unit/debian_promtool.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "prometheus"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / ".collections"))
sys.path.insert(0, str(REPO / "tests" / "unit"))

from ansible_collections.onprem.daskhpc.plugins.filter import metrics  # noqa: E402
from debian_promtool import find_promtool  # noqa: E402


def lab_site():
    with open(REPO / "inventories" / "lab" / "group_vars" / "all" / "site.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["daskhpc_site"]


def role_defaults():
    with open(ROLE / "defaults" / "main.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def render_rules(directory):
    env = jinja2.Environment(variable_start_string="[[", variable_end_string="]]", undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    variables = dict(role_defaults(), rule_vars=metrics.metrics_rule_vars(lab_site()), runbook="RUNBOOK",
                     ansible_managed="Ansible managed")
    paths = []
    for name in ("daskhpc-recording.yml", "daskhpc-alerts.yml"):
        template = env.from_string((ROLE / "templates" / (name + ".j2")).read_text())
        path = Path(directory) / name
        path.write_text(template.render(**variables))
        paths.append(path)
    return paths


def promtool(*args, cwd=None):
    proc = subprocess.run([find_promtool(), *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def alert_names(path):
    return [rule["alert"] for group in yaml.safe_load(Path(path).read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def test_check_rules(tmp_path):
    out = promtool("check", "rules", *render_rules(tmp_path))
    assert "SUCCESS" in out


def test_check_config(tmp_path):
    rules = render_rules(tmp_path)
    # promtool checks that the TLS files exist
    tls = {"ca_file": "ca.pem", "cert_file": "prometheus.pem", "key_file": "prometheus.key"}
    for name in tls.values():
        (tmp_path / name).write_text("")
    tls = {key: str(tmp_path / name) for key, name in tls.items()}
    (tmp_path / "jupyterhub-token").write_text("token")
    config = metrics.metrics_prometheus_config(lab_site(), ["ctl1", "ctl2"], ["login1", "login2"],
                                               [str(p) for p in rules], alertmanagers=["am:9093"], discovery_tls=tls,
                                               jupyterhub_token_file=str(tmp_path / "jupyterhub-token"))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = promtool("check", "config", path)
    assert "SUCCESS" in out
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["daskhpc_exporter"]["static_configs"][0]["targets"] == ["ctl1:9817", "ctl2:9817"]
    assert [sd["url"] for sd in jobs["dask"]["http_sd_configs"]] == ["https://login1:9818/targets",
                                                                     "https://login2:9818/targets"]


@pytest.mark.parametrize("test_file", sorted(p.name for p in HERE.glob("*_test.yml")))
def test_rule_unit_tests(tmp_path, test_file):
    render_rules(tmp_path)
    shutil.copy(HERE / test_file, tmp_path / test_file)
    out = promtool("test", "rules", test_file, cwd=tmp_path)
    assert "SUCCESS" in out


def test_every_alert_has_a_unit_test_and_a_runbook(tmp_path):
    _rules, alerts = render_rules(tmp_path)
    names = alert_names(alerts)
    assert len(names) >= 7
    tested = set()
    for path in HERE.glob("*_test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    tested.add(case["alertname"])
    assert set(names) <= tested, "alerts without a firing unit test: %s" % sorted(set(names) - tested)
    docs = (REPO / "docs" / "observability.md").read_text()
    anchors = set(re.findall(r"^#+ (Daskhpc\w+)", docs, re.MULTILINE))
    assert set(names) <= anchors, "alerts without a runbook section: %s" % sorted(set(names) - anchors)


def test_pending_behind_burst_waits_for_the_grace_time():
    site = lab_site()
    site["burst"]["grace_time"] = 300
    assert metrics.metrics_rule_vars(site)["pending_behind_burst_for"] == "390s"


def test_bad_model_is_refused_with_the_field():
    site = lab_site()
    site["metrics"]["exporter_port"] = 70000
    with pytest.raises(Exception, match="metrics.exporter_port"):
        metrics.metrics_exporter_config(site)


def test_exporter_config_from_model():
    config = metrics.metrics_exporter_config(lab_site())
    assert config["burst_partitions"] == ["burst"]
    assert config["production_partitions"] == ["prod", "bigmem"]
    assert config["burst_max_share_ratio"] == 0.5
    assert config["burst_max_cores"] == 16  # 50 % of the lab's 4 nodes x 8 cpus
    assert config["ledger_path"] == os.path.join("/etc/daskhpc/ca", "ledger.jsonl")
