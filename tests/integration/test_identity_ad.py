"""The same site on the lab's Active Directory: Samba AD DC on `ad`, sssd (ldap_schema ad) on every host.

The module fixture converges identity.yml and access.yml with the site model's ldap section from
lab/ad_ldap.yml (the only difference from the OpenLDAP site), and converges back afterwards.
In AD bob reaches datasci only through ml-team (inventories/lab/group_vars/all/ad_seed.yml).
"""

from __future__ import annotations

import pytest
from conftest import adhoc, sh, wait_until
from ldap_helpers import ad_ldap, ad_site_vars, ca_file, play, samba_tool, write_play
from test_access import associations, submit
from test_identity import client_file_checksums

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def ad(lab, tmp_path_factory):
    site = ad_site_vars(tmp_path_factory.mktemp("ad"))
    try:
        for playbook in ("identity.yml", "access.yml"):
            run = play(playbook, "-e", "@%s" % site)
            assert run.rc == 0 and run.failed == 0, run.output[-5000:]
        yield site
    finally:
        for playbook in ("identity.yml", "access.yml"):  # back to the lab's OpenLDAP site
            back = play(playbook)
            assert back.rc == 0 and back.failed == 0, back.output[-5000:]


def test_ad_second_converge_changes_nothing(ad):
    again = play("identity.yml", "-e", "@%s" % ad)
    assert again.rc == 0 and again.changed == 0, again.output[-5000:]


@pytest.mark.parametrize("host", ["login", "cn1", "bm1", "ctl"])
def test_ad_users_and_nested_groups_resolve(ad, host):
    out = sh("getent", "passwd", "alice", host=host)
    assert out.stdout.strip() == "alice:*:10001:100:Alice Lab:/home/alice:/bin/bash"
    bob = sh("id", "bob", host=host).stdout
    # bob is in ml-team, which is in datasci: the name service shows both.
    assert "20003(ml-team)" in bob and "20001(datasci)" in bob, bob
    carol = sh("id", "carol", host=host).stdout
    assert "20002(research)" in carol and "datasci" not in carol


def test_ad_nested_member_holds_a_burst_association_and_can_burst(ad):
    assert associations("burst") == ["alice", "bob"]
    result, qos = submit("bob", "burst", "burst")
    assert result.returncode == 0, result.stderr
    assert qos == "burst"
    refused, _ = submit("mallory", "burst", "burst")
    assert refused.returncode != 0


def test_lookup_and_module_say_through_which_group(ad, tmp_path):
    """The lookup (controller) and ldap_info (a client) read AD over LDAPS with the site CA."""
    ldap = ad_ldap()
    controller_ca = str(tmp_path / "ca.pem")
    playbook = write_play(tmp_path, [
        {"name": "bundle", "ansible.builtin.fetch": {"src": ca_file(), "dest": controller_ca, "flat": True}},
        {"name": "members", "ansible.builtin.set_fact": {
            "members": "{{ query('onprem.daskhpc.ldap_members', 'datasci', ldap=daskhpc_site.ldap, "
                       "bind_pw=daskhpc_ldap_reader_password, ca_file='%s', attributes=['uidNumber']) }}"
                       % controller_ca}},
        {"name": "check", "ansible.builtin.assert": {"that": [
            "members | map(attribute='uid') | list == ['alice', 'bob']",
            "members[1].via == {'datasci': ['datasci', 'ml-team']}",
            "members[0].via == {'datasci': ['datasci']}",
            "members[1].uidNumber == ['10002']"]}},
        {"name": "client", "onprem.daskhpc.ldap_info": {
            "server_uri": ldap["uri"], "start_tls": False, "ca_file": ca_file(), "schema": "ad",
            "bind_dn": ldap["bind_dn"], "bind_pw": "{{ daskhpc_ldap_reader_password }}",
            "group_base": ldap["group_base"], "groups": ["datasci", "ml-team"]}, "register": "info"},
        {"name": "check client", "ansible.builtin.assert": {"that": [
            "info.groups == {'datasci': ['alice', 'bob'], 'ml-team': ['bob']}"]}},
    ], hosts="login")
    run = play(str(playbook), "-e", "@%s" % ad)
    assert run.rc == 0, run.output[-3000:]


def test_ad_leaver_from_nested_group_loses_access_within_the_bound(ad):
    """bob leaves ml-team in AD and nothing is run: within ldap.cache_seconds he is out of datasci on the
    login host and slurmctld refuses his burst job; access.yml then removes his association."""
    bound = ad_ldap()["cache_seconds"]
    try:
        samba_tool("group", "removemembers", "ml-team", "bob")

        def gone():
            return ("datasci" not in sh("id", "bob", host="login").stdout
                    and submit("bob", "burst", "burst")[0].returncode != 0)

        assert wait_until(gone, bound + 15, step=5), "bob kept burst access beyond %ss" % bound
        sync = play("access.yml", "-e", "@%s" % ad)
        assert sync.rc == 0, sync.output[-4000:]
        assert associations("burst") == ["alice"]
    finally:
        samba_tool("group", "addmembers", "ml-team", "bob")
        restored = play("access.yml", "-e", "@%s" % ad)
    assert restored.rc == 0, restored.output[-4000:]
    assert associations("burst") == ["alice", "bob"]


def test_ad_down_during_a_converge_changes_nothing(ad, lab_hosts):
    before = client_file_checksums(lab_hosts)
    assert sh("systemctl", "stop", "samba-ad-dc", host="ad", check=False).returncode == 0
    try:
        run = play("identity.yml", "--tags", "sssd", "-e", "@%s" % ad)
    finally:
        sh("systemctl", "start", "samba-ad-dc", host="ad")
        adhoc(lab_hosts, "ad", "wait_for", port=636, timeout=120)
    assert run.rc != 0
    assert "directory unreachable: cannot connect to %s" % ad_ldap()["uri"] in run.output
    assert client_file_checksums(lab_hosts) == before
    for host in ("login", "cn1"):  # and the nodes still resolve users (sssd answers from its cache)
        assert sh("getent", "passwd", "alice", host=host, check=False).returncode == 0, host
