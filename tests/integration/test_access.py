"""Scheduler access from directory groups, on the real lab cluster.

The lab is brought up through the playbooks (the session `lab` fixture converges
playbooks/lab.yml), then identity.yml and access.yml run as they do in site.yml. Users submit
on the login host, logged in over SSH as themselves; root reads the scheduler on ctl.
"""

from __future__ import annotations

import pytest
from conftest import sh, wait_until
from ldap_helpers import admin_connection, ldap_settings, play, write_play

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def access(lab):
    for playbook in ("identity.yml", "access.yml"):
        run = play(playbook)
        assert run.rc == 0 and run.failed == 0, run.output[-5000:]
    return run


def submit(user, partition, account=None):
    """A held batch job (accepted or refused by slurmctld, never run); the job is cancelled at once."""
    argv = ["sbatch", "--hold", "--parsable", "--output=/dev/null", "--partition", partition, "--wrap", "true"]
    if account:
        argv[1:1] = ["--account", account]
    result = sh(*argv, user=user, check=False)
    if result.returncode == 0:
        job = result.stdout.strip().split(";")[0]
        qos = sh("squeue", "-h", "-j", job, "-o", "%q").stdout.strip()
        sh("scancel", job, check=False)
        return result, qos
    return result, None


def associations(account):
    out = sh("sacctmgr", "--parsable2", "--noheader", "show", "association", "account=%s" % account,
             "cluster=lab", "format=User").stdout
    return sorted(u for u in out.split() if u)


def set_membership(tmp_path, members_mode, members):
    ldap = ldap_settings()
    playbook = write_play(tmp_path, [{"name": "membership", "onprem.daskhpc.ldap_group": dict(
        admin_connection(), base=ldap["group_base"], name="datasci", gid_number=20001,
        members=members, members_mode=members_mode)}], "membership-%s.yml" % members_mode)
    run = play(str(playbook))
    assert run.rc == 0, run.output[-3000:]
    return run


def test_access_second_run_changes_nothing(access):
    again = play("access.yml")
    assert again.rc == 0 and again.changed == 0, again.output[-4000:]


def test_associations_follow_groups(access):
    assert associations("burst") == ["alice", "bob"]
    assert {"alice", "bob", "carol"} <= set(associations("production"))
    assert "mallory" not in associations("burst") + associations("production")


def test_alice_can_submit_to_burst_under_the_burst_qos(access):
    result, qos = submit("alice", "burst", "burst")
    assert result.returncode == 0, result.stderr
    assert qos == "burst"


def test_mallory_is_refused_with_a_reason(access):
    result, _qos = submit("mallory", "burst", "burst")
    assert result.returncode != 0
    assert "Batch job submission failed" in result.stderr
    assert "Invalid account" in result.stderr or "not permitted" in result.stderr


def test_carol_can_use_prod_but_not_burst(access):
    result, qos = submit("carol", "prod")
    assert result.returncode == 0, result.stderr
    assert qos == "normal"
    refused, _qos = submit("carol", "burst", "burst")
    assert refused.returncode != 0


def test_removing_bob_from_datasci_removes_burst_access_and_adding_back_restores(access, tmp_path):
    try:
        set_membership(tmp_path, "remove", ["bob"])
        checked = play("access.yml", "--check", "--diff")
        assert checked.rc == 0 and checked.changed > 0, checked.output[-4000:]
        assert "-    - bob" in checked.output
        assert "bob" in associations("burst")  # check mode changed nothing
        sync = play("access.yml")
        assert sync.rc == 0, sync.output[-4000:]
        assert "RUNNING HANDLER [Make slurmctld re-read AllowGroups" in sync.output
        # access.yml expired sssd's cache on the controller: slurmctld's view changed now.
        assert "datasci" not in sh("id", "bob", host="ctl").stdout
        assert "bob" not in associations("burst")
        refused, _qos = submit("bob", "burst", "burst")
        assert refused.returncode != 0
        assert "Invalid account" in refused.stderr or "not permitted" in refused.stderr
    finally:
        set_membership(tmp_path, "append", ["bob"])
        restored = play("access.yml")
    assert restored.rc == 0, restored.output[-4000:]
    assert "bob" in associations("burst")
    result, qos = submit("bob", "burst", "burst")
    assert result.returncode == 0, result.stderr
    assert qos == "burst"


def test_a_leaver_loses_burst_access_within_the_bound_with_no_run(access, tmp_path, lab_site):
    """Removed from datasci and nothing run afterwards: sssd's caches and GroupUpdateTime alone end bob's
    burst access within ldap.cache_seconds (his association is still there: AllowGroups refuses him)."""
    bound = lab_site["ldap"]["cache_seconds"]
    assert "datasci" in sh("id", "bob", host="login").stdout  # cached on the login host
    try:
        set_membership(tmp_path, "remove", ["bob"])

        def gone():
            return ("datasci" not in sh("id", "bob", host="login").stdout
                    and "datasci" not in sh("id", "bob", host="ctl").stdout
                    and submit("bob", "burst", "burst")[0].returncode != 0)

        # The bound plus one scheduling pass of slack for the submission itself.
        assert wait_until(gone, bound + 15, step=5), "bob kept burst access beyond %ss" % bound
        assert "bob" in associations("burst")  # refused by AllowGroups alone
    finally:
        set_membership(tmp_path, "append", ["bob"])
        restored = play("access.yml")
    assert restored.rc == 0, restored.output[-4000:]
