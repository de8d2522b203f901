"""The exporter on the live PBS server: the same metric names as the SLURM exporter, with live values.

Needs the PBS lab (`make test-pbs`). The exporter runs on the PBS server host (inventory group
controller) and serves Prometheus's service certificate only, so it is scraped from the Prometheus host.
"""

from __future__ import annotations

import textwrap

import pytest
import yaml
import pbs_helpers
from pbs_helpers import job, qsub, wait_for
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import LAB_INVENTORY, REPO, inventory_group, sh
from daskhpc.exporter.server import build_registry

pytestmark = pytest.mark.lab
jobs = pbs_helpers.jobs  # the fixture (helpers are not a conftest: tests/conftest.py is the one)

with open(LAB_INVENTORY / "group_vars" / "all" / "site.yml") as _fh:
    _PORT = yaml.safe_load(_fh)["daskhpc_site"]["metrics"]["exporter_port"]
PROMETHEUS_HOST = inventory_group("prometheus")[0]
EXPORTER = "https://%s:%d/metrics" % (inventory_group("pbs_server")[0], _PORT)
AS_PROMETHEUS = ["--cacert", "/etc/daskhpc/tls/ca.pem", "--cert", "/etc/daskhpc/tls/prometheus.pem",
                 "--key", "/etc/daskhpc/tls/prometheus.key"]
SLURM_RECORDED = REPO / "tests" / "unit" / "data" / "exporter"


def families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def slurm_metric_names(tmp_path):
    """The SLURM exporter's shared metric names: its collector on squeue/sinfo/sdiag/sacct's recorded output,
    without the daskhpc_slurm_* families (slurmctld's own diagnostics, which PBS has no equivalent for)."""
    for command in ("squeue", "sinfo", "sdiag", "sacct"):
        script = tmp_path / command
        script.write_text(textwrap.dedent("""\
            #!/bin/sh
            cat %s
            """ % (SLURM_RECORDED / (command + ".txt"))))
        script.chmod(0o755)
    config = {"scheduler": "slurm", "burst_partitions": ["burst"], "production_partitions": ["prod"],
              "burst_max_share_ratio": 0.5, "burst_max_cores": 8, "min_interval_seconds": 10,
              "slow_interval_seconds": 60, "slurm_bin_dir": str(tmp_path),
              "ledger_path": str(tmp_path / "ledger.jsonl")}  # the lab's exporter reads the CA's ledger too
    (tmp_path / "ledger.jsonl").write_text("")
    names = set(families(generate_latest(build_registry(config)).decode()))
    return {name for name in names if not name.startswith("daskhpc_slurm_")}  # sdiag's: SLURM's own


def test_pbs_exporter_serves_the_slurm_metric_names_with_live_values(lab, jobs, tmp_path):
    jobs.append(qsub("alice", "burst", 2))
    wait_for("alice's burst job running", lambda: job(jobs[0])["job_state"] == "R")

    def scrape_showing_alice():
        text = sh("curl", "-sSf", "--max-time", "10", *AS_PROMETHEUS, EXPORTER, host=PROMETHEUS_HOST).stdout
        return 'daskhpc_burst_cores{user="alice"} 2.0' in text and text

    text = wait_for("the exporter to see alice's running job", scrape_showing_alice, timeout=120)
    live, slurm = set(families(text)), slurm_metric_names(tmp_path)
    assert live == slurm, "only PBS: %s; only SLURM: %s" % (sorted(live - slurm), sorted(slurm - live))
    assert "daskhpc_up 1.0" in text
    assert 'daskhpc_jobs{partition="burst",state="running"} 1.0' in text
