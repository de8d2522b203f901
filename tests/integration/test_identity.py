"""Identity on the lab: real slapd on svc, real sssd on every host, brought up through playbooks/identity.yml.

Names are resolved on the hosts (getent, id over SSH), the directory is read from a client host
through onprem.daskhpc.ldap_info (pytest-ansible), written where the ldap_server role writes it.
"""

from __future__ import annotations

import re

import pytest
from conftest import HOSTS, adhoc, read_file, sh, slurm_config
from ldap_helpers import (CLIENT_HOST, admin_connection, ca_file, directory_read, find_users, ldap_settings, play,
                          reader_connection, resolve_groups, slapd, wait_for_directory, write_play)

pytestmark = pytest.mark.lab

CLIENT_FILES = ["/etc/sssd/sssd.conf", "/etc/nsswitch.conf"]


@pytest.fixture(scope="module")
def identity(lab):
    """The lab plus identity.yml (the directory seeded, every node resolving it)."""
    run = play("identity.yml")
    assert run.rc == 0 and run.failed == 0, run.output[-5000:]
    return run


def client_file_checksums(lab_hosts):
    """{(host, path): sha256} of sssd.conf and nsswitch.conf on every host."""
    sums = {}
    for path in CLIENT_FILES:
        for host, result in adhoc(lab_hosts, "all", "stat", path=path, checksum_algorithm="sha256").items():
            assert result["stat"]["exists"], "%s:%s is missing" % (host, path)
            sums[(host, path)] = result["stat"]["checksum"]
    assert {host for host, _path in sums} == set(HOSTS)
    return sums


def test_identity_second_converge_changes_nothing(identity):
    again = play("identity.yml")
    assert again.rc == 0 and again.changed == 0, again.output[-5000:]


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_getent_passwd_shows_ldap_user(identity, host):
    out = sh("getent", "passwd", "alice", host=host, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "alice:*:10001:100:Alice Lab:/home/alice:/bin/bash"
    assert b"alice" not in read_file(host, "/etc/passwd")  # it comes from the directory, not local files


@pytest.mark.parametrize("host", ["login", "ctl", "cn1"])  # where users work, slurmctld checks AllowGroups, jobs run
def test_id_shows_ldap_groups(identity, host):
    assert "20001(datasci)" in sh("id", "alice", host=host).stdout
    assert "20001(datasci)" in sh("id", "bob", host=host).stdout
    carol = sh("id", "carol", host=host).stdout
    assert "20002(research)" in carol and "datasci" not in carol
    mallory = sh("id", "mallory", host=host, check=False)
    assert mallory.returncode == 0
    assert "datasci" not in mallory.stdout and "research" not in mallory.stdout


def test_filter_injection_matches_nothing(identity, lab_hosts):
    assert find_users(lab_hosts, ["*)(uid=*", "*"]) == {}
    refused = directory_read(lab_hosts, allow_failure=True, group_base=ldap_settings()["group_base"],
                             groups=["*)(cn=*"])
    assert refused.get("failed") and "not found" in refused["msg"], refused
    # Through sssd too: the name service escapes it and finds no one.
    assert sh("getent", "passwd", "*)(uid=*", host=CLIENT_HOST, check=False).returncode == 2
    assert sh("getent", "group", "*)(cn=*", host=CLIENT_HOST, check=False).returncode == 2


def test_filter_injection_through_module_and_lookup(identity, tmp_path):
    ldap = ldap_settings()
    conn = dict(admin_connection(), bind_dn=ldap["bind_dn"], bind_pw="{{ daskhpc_ldap_reader_password }}")
    # The module runs on a directory client; the lookup runs on the Ansible controller, verifying the
    # directory against its own copy of the site CA bundle, as in playbooks/user_credentials.yml.
    controller_ca = str(tmp_path / "ca.pem")
    playbook = write_play(tmp_path, [
        {"name": "users", "onprem.daskhpc.ldap_info": dict(conn, user_base=ldap["user_base"],
                                                           users=["*)(uid=*"]), "register": "info"},
        {"name": "bundle", "ansible.builtin.fetch": {"src": ca_file(), "dest": controller_ca, "flat": True}},
        {"name": "members", "ansible.builtin.set_fact": {
            "members": "{{ query('onprem.daskhpc.ldap_members', '*)(cn=*', 'datasci', ldap=daskhpc_site.ldap, "
                       "bind_pw=daskhpc_ldap_reader_password, ca_file='%s', missing='ignore') }}" % controller_ca}},
        {"name": "check", "ansible.builtin.assert": {"that": ["info.users == {}", "members == ['alice', 'bob']"]}},
    ], hosts=CLIENT_HOST)
    run = play(str(playbook))
    assert run.rc == 0, run.output[-3000:]


def test_group_not_found_is_named(identity, tmp_path):
    ldap = ldap_settings()
    conn = dict(admin_connection(), bind_dn=ldap["bind_dn"], bind_pw="{{ daskhpc_ldap_reader_password }}")
    playbook = write_play(tmp_path, [{"name": "resolve", "onprem.daskhpc.ldap_info": dict(
        conn, group_base=ldap["group_base"], groups=["no-such-group"])}], hosts=CLIENT_HOST)
    run = play(str(playbook))
    assert run.rc != 0
    assert "group 'no-such-group' not found" in run.output and "Fix:" in run.output


def _module_tasks(state="present"):
    ldap = ldap_settings()
    conn = admin_connection()
    return [
        {"name": "user", "onprem.daskhpc.ldap_user": dict(
            conn, base=ldap["user_base"], uid="ldaptest", uid_number=10999, gid_number=100, cn="Ldap Test",
            password="test-password-1", state=state)},
        {"name": "group", "onprem.daskhpc.ldap_group": dict(
            conn, base=ldap["group_base"], name="ldaptestgrp", gid_number=20999, members=["ldaptest"],
            state=state)},
    ]


def test_ldap_user_and_group_check_diff_and_idempotence(identity, tmp_path, lab_hosts):
    playbook = write_play(tmp_path, _module_tasks())
    cleanup = write_play(tmp_path, list(reversed(_module_tasks("absent"))), "cleanup.yml")
    play(str(cleanup))
    try:
        checked = play(str(playbook), "--check", "--diff")
        assert checked.rc == 0 and checked.changed == 2, checked.output[-3000:]
        assert "+    uid: ldaptest" in checked.output and "+    memberUid: ldaptest" in checked.output
        assert "test-password-1" not in checked.output
        assert find_users(lab_hosts, ["ldaptest"]) == {}  # check mode wrote nothing

        first = play(str(playbook), "--diff")
        assert first.rc == 0 and first.changed == 2, first.output[-3000:]
        assert resolve_groups(lab_hosts, ["ldaptestgrp"]) == {"ldaptestgrp": ["ldaptest"]}

        second = play(str(playbook))
        assert second.rc == 0 and second.changed == 0, second.output[-3000:]
        assert play(str(playbook), "--check").changed == 0
    finally:
        removed = play(str(cleanup))
        assert removed.rc == 0, removed.output[-3000:]
    assert find_users(lab_hosts, ["ldaptest"]) == {}


def test_bind_refused_leaves_client_config_untouched(identity, lab_hosts):
    before = client_file_checksums(lab_hosts)
    run = play("identity.yml", "--tags", "sssd", extra_vars={"sssd_bind_password": "wrong-password"})
    assert run.rc != 0
    assert "bind refused for cn=reader" in run.output and "invalid credentials" in run.output
    assert client_file_checksums(lab_hosts) == before


def test_slapd_stopped_fails_clearly_and_leaves_client_config_untouched(identity, lab_hosts):
    before = client_file_checksums(lab_hosts)
    stopped = slapd("stop")
    assert stopped.returncode == 0, stopped.stderr
    try:
        run = play("identity.yml", "--tags", "sssd")
    finally:
        started = slapd("start")
        wait_for_directory(lab_hosts)
    assert started.returncode == 0, started.stderr
    assert run.rc != 0
    assert "directory unreachable: cannot connect to %s" % reader_connection()["server_uri"] in run.output
    assert "slapd is running" in run.output
    assert client_file_checksums(lab_hosts) == before
    for host in ("login", "ctl"):  # and the nodes still resolve users
        assert sh("getent", "passwd", "alice", host=host, check=False).returncode == 0, host


def test_sssd_caches_stay_within_the_leaver_bound(identity, lab_site):
    """sssd's two caches on every host plus slurmctld's GroupUpdateTime add up to at most ldap.cache_seconds."""
    bound = lab_site["ldap"]["cache_seconds"]
    group_update = int(slurm_config("GroupUpdateTime").split()[0])
    for host in sorted(HOSTS):
        conf = read_file(host, "/etc/sssd/sssd.conf").decode()
        entry = int(re.search(r"^entry_cache_timeout = (\d+)$", conf, re.MULTILINE).group(1))
        memcache = int(re.search(r"^memcache_timeout = (\d+)$", conf, re.MULTILINE).group(1))
        assert 0 < entry + memcache + group_update <= bound, host
        assert re.search(r"^ldap_tls_reqcert = demand$", conf, re.MULTILINE), host
    assert sh("systemctl", "is-active", "nslcd", host="login", check=False).stdout.strip() != "active"
