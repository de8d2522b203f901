"""playbooks/pbs.yml through ansible-playbook, with a fake ``qmgr`` (tests/fixtures/pbs/fake_qmgr.py).

The fake serves the recorded ``print server``/``print sched`` state and applies the directives it gets,
re-printing in qmgr's format; it is a recorded-format stand-in, not a PBS server (docs/pbs.md says what
this does and does not prove). A small process stands in for pbs_sched to receive the SIGHUP.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pbs

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "pbs"
SCHED_CONFIG = """# sched_config (excerpt of OpenPBS's shipped file)
round_robin: False\tall
by_queue: True\t\tprime
by_queue: True\t\tnon_prime
strict_ordering: false\tALL
help_starving_jobs:\ttrue\tALL
max_starve: 24:00:00
backfill_prime:\tfalse\tALL
prime_exempt_anytime_queues:\tfalse
primetime_prefix: p_
nonprimetime_prefix: np_
node_sort_key: "sort_priority HIGH"\tALL
provision_policy: "aggressive_provision"
sort_queues:\ttrue\tALL
resources: "ncpus, mem, arch, host, vnode, aoe, eoe"
load_balancing: false\tALL
smp_cluster_dist: pack
fair_share: false\tALL
unknown_shares: 10
fairshare_usage_res: cput
fairshare_entity: euser
fairshare_decay_time: 24:00:00
fairshare_decay_factor: 0.5
preemptive_sched: false\tALL
dedicated_prefix: ded
"""
HUP_CATCHER = """
import signal, sys, time
path = sys.argv[1]
def hup(*_):
    with open(path, "a") as fh:
        fh.write("HUP\\n")
signal.signal(signal.SIGHUP, hup)
for _ in range(1200):
    time.sleep(0.5)
"""


def ansible_env():
    env = dict(os.environ)
    env.update(PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PYTHONPATH=str(REPO / ".collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_RETRY_FILES_ENABLED="0")
    return env


@pytest.fixture
def site(tmp_path):
    state = tmp_path / "qmgr"
    state.mkdir()
    shutil.copy(FIXTURES / "print_server_initial.txt", state / "server.txt")
    shutil.copy(FIXTURES / "print_sched_default.txt", state / "sched.txt")
    home = tmp_path / "pbs_home"
    (home / "sched_priv").mkdir(parents=True)
    (home / "sched_priv" / "sched_config").write_text(SCHED_CONFIG)
    hups = tmp_path / "hups"
    catcher = subprocess.Popen([sys.executable, "-c", HUP_CATCHER, str(hups)])
    (home / "sched_priv" / "sched.lock").write_text("%d\n" % catcher.pid)
    model = yaml.safe_load((REPO / "inventories/example-pbs/group_vars/all/site.yml").read_text())["daskhpc_site"]
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"pbs_server": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "pbs_qmgr": str(FIXTURES / "fake_qmgr.py"), "pbs_home": str(home), "daskhpc_site": model}}}}}}))
    yield {"state": state, "home": home, "hups": hups, "inventory": inventory, "env": {"FAKE_QMGR_DIR": str(state)}}
    catcher.send_signal(signal.SIGTERM)
    catcher.wait(timeout=10)


def play(site, *args):
    env = ansible_env()
    env.update(site["env"])
    proc = subprocess.run(["ansible-playbook", "-i", str(site["inventory"]), str(REPO / "playbooks" / "pbs.yml"),
                           "-e", "ansible_become=false", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    recap = [line for line in output.splitlines() if line.startswith("localhost") and "ok=" in line][-1]
    changed = int(recap.split("changed=")[1].split()[0])
    return changed, output


def commands(site):
    path = site["state"] / "commands.log"
    return [c for c in path.read_text().splitlines() if not c.startswith("print")] if path.exists() else []


def wait_for_hup(path):
    for _attempt in range(40):
        if path.exists():
            return path.read_text().count("HUP")
        time.sleep(0.25)
    return 0


def test_converge_applies_the_model_then_changes_nothing(site):
    initial = (site["state"] / "server.txt").read_text()
    changed, output = play(site, "--check", "--diff")
    assert changed > 0
    assert commands(site) == []  # check mode: only 'print' ran
    assert (site["state"] / "server.txt").read_text() == initial
    assert "preemptive_sched: false" in (site["home"] / "sched_priv" / "sched_config").read_text()

    changed, output = play(site)
    # sched_config, sched, 3 queues, server, workq removed (sched_config counts with its handler)
    assert changed == 6, output
    sent = commands(site)
    assert sent[0] == "set sched preempt_order = RD"
    assert "create queue burst" in sent and "set server default_queue = prod" in sent
    # pbs_postinstall's queue open to everyone goes, after the default queue has moved to prod
    assert sent.index("delete queue workq") > sent.index("set server default_queue = prod")
    # the role's site attributes (pbs_server_site_attributes), not derived from the model
    assert "set server flatuid = True" in sent and "set server job_history_enable = True" in sent
    assert 'set queue burst max_run_res.ncpus = "[o:PBS_ALL=256],[u:PBS_GENERIC=64]"' in sent
    # the state the fake now prints equals the recorded converged state, queue by queue
    after = pbs.parse_print((site["state"] / "server.txt").read_text())
    expected = pbs.parse_print((FIXTURES / "print_server_converged.txt").read_text())
    for name in ("prod", "bigmem", "burst"):
        assert pbs.current_attributes("queue", after["queues"][name]) == \
            pbs.current_attributes("queue", expected["queues"][name]), name
    assert after["server"]["default_queue"] == ["prod"]
    config = (site["home"] / "sched_priv" / "sched_config").read_text()
    assert "preemptive_sched: true ALL" in config and "preemptive_sched: false" not in config
    assert list((site["home"] / "sched_priv").glob("sched_config.*~")), "no backup of sched_config"
    assert wait_for_hup(site["hups"]) == 1

    before = len(commands(site))
    changed, output = play(site)
    assert changed == 0, output
    assert len(commands(site)) == before  # nothing but 'print' the second time
    assert wait_for_hup(site["hups"]) == 1


def test_drift_is_repaired_with_only_the_differences(site):
    shutil.copy(FIXTURES / "print_server_drifted.txt", site["state"] / "server.txt")
    shutil.copy(FIXTURES / "print_sched_converged.txt", site["state"] / "sched.txt")
    (site["home"] / "sched_priv" / "sched_config").write_text(SCHED_CONFIG.replace("preemptive_sched: false",
                                                                                   "preemptive_sched: true"))
    changed, output = play(site, "--diff")
    assert changed == 2, output  # the burst queue, and the installation queue workq that reappeared
    assert commands(site) == [
        "set queue burst Priority = 1",
        "set queue burst acl_groups = datasci",
        "set queue burst kill_delay = 120",
        'set queue burst max_run_res.ncpus = "[o:PBS_ALL=256],[u:PBS_GENERIC=64]"',
        "delete queue workq",
    ]
    assert "-    Priority: '100'" in output and "+    Priority: '1'" in output  # --diff shows before and after
    assert wait_for_hup(site["hups"]) == 0  # sched_config unchanged: no SIGHUP


def test_example_pbs_inventory_passes_syntax_check_and_validation():
    proc = subprocess.run(["ansible-playbook", "--syntax-check", "-i", str(REPO / "inventories" / "example-pbs"),
                           str(REPO / "playbooks" / "pbs.yml")],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = yaml.safe_load((REPO / "inventories/example-pbs/group_vars/all/site.yml").read_text())["daskhpc_site"]
    from ansible_collections.onprem.daskhpc.plugins.module_utils._core import site_model

    validated = site_model.validate(model)
    assert validated["scheduler"] == "pbs"
    assert [q["name"] for q in pbs.pbs_queues(validated)] == ["burst", "prod", "bigmem"]
