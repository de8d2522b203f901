"""Identity on the lab: real slapd, real nslcd, brought up through playbooks/identity.yml."""

from __future__ import annotations

import pytest
from ldap_helpers import (admin_connection, ca_file, ldap_settings, play, secrets, sh, sha256, slapd,
                          wait_for_directory, write_play)

from ansible_collections.onprem.daskhpc.plugins.module_utils import ldap as L

pytestmark = pytest.mark.lab

CLIENT_FILES = ["/etc/nslcd.conf", "/etc/nsswitch.conf"]


@pytest.fixture(scope="module")
def identity(lab):
    """The lab plus identity.yml (the directory seeded, every node resolving it)."""
    run = play("identity.yml")
    assert run.rc == 0 and run.failed == 0, run.output[-5000:]
    return run


@pytest.fixture
def reader(identity):
    ldap = ldap_settings()
    conn = L.connect(ldap["uri"], ldap["bind_dn"], secrets()["daskhpc_ldap_reader_password"],
                     start_tls=ldap["start_tls"], ca_file=ca_file())
    yield conn
    conn.unbind()


def test_identity_second_converge_changes_nothing(identity):
    again = play("identity.yml")
    assert again.rc == 0 and again.changed == 0, again.output[-5000:]


def test_getent_passwd_shows_ldap_user(identity):
    out = sh("getent", "passwd", "alice")
    assert out.returncode == 0
    assert out.stdout.strip() == "alice:x:10001:100:Alice Lab:/home/alice:/bin/bash"
    assert "alice" not in open("/etc/passwd").read()  # it comes from the directory, not local files


def test_id_shows_ldap_groups(identity):
    assert "20001(datasci)" in sh("id", "alice").stdout
    assert "20001(datasci)" in sh("id", "bob").stdout
    carol = sh("id", "carol").stdout
    assert "20002(research)" in carol and "datasci" not in carol
    mallory = sh("id", "mallory")
    assert mallory.returncode == 0
    assert "datasci" not in mallory.stdout and "research" not in mallory.stdout


def test_filter_injection_matches_nothing(reader):
    ldap = ldap_settings()
    assert L.find_users(reader, ldap["user_base"], ["*)(uid=*", "*"]) == {}
    with pytest.raises(L.GroupNotFound):
        L.find_group(reader, ldap["group_base"], "*)(cn=*")
    # Through nslcd too: the name service escapes it and finds no one.
    assert sh("getent", "passwd", "*)(uid=*").returncode == 2
    assert sh("getent", "group", "*)(cn=*").returncode == 2


def test_filter_injection_through_module_and_lookup(identity, tmp_path):
    ldap = ldap_settings()
    conn = {k: v for k, v in admin_connection().items()}
    conn.update(bind_dn=ldap["bind_dn"], bind_pw="{{ daskhpc_ldap_reader_password }}")
    playbook = write_play(tmp_path, [
        {"name": "users", "onprem.daskhpc.ldap_info": dict(conn, user_base=ldap["user_base"],
                                                            users=["*)(uid=*"]), "register": "info"},
        {"name": "members", "ansible.builtin.set_fact": {
            "members": "{{ query('onprem.daskhpc.ldap_members', '*)(cn=*', 'datasci', ldap=daskhpc_site.ldap, "
                       "bind_pw=daskhpc_ldap_reader_password, ca_file='%s', missing='ignore') }}" % ca_file()}},
        {"name": "check", "ansible.builtin.assert": {"that": ["info.users == {}", "members == ['alice', 'bob']"]}},
    ])
    run = play(str(playbook))
    assert run.rc == 0, run.output[-3000:]


def test_group_not_found_is_named(identity, tmp_path):
    ldap = ldap_settings()
    conn = dict(admin_connection(), bind_dn=ldap["bind_dn"], bind_pw="{{ daskhpc_ldap_reader_password }}")
    playbook = write_play(tmp_path, [{"name": "resolve", "onprem.daskhpc.ldap_info": dict(
        conn, group_base=ldap["group_base"], groups=["no-such-group"])}])
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


def test_ldap_user_and_group_check_diff_and_idempotence(identity, tmp_path, reader):
    ldap = ldap_settings()
    playbook = write_play(tmp_path, _module_tasks())
    cleanup = write_play(tmp_path, list(reversed(_module_tasks("absent"))), "cleanup.yml")
    play(str(cleanup))
    try:
        checked = play(str(playbook), "--check", "--diff")
        assert checked.rc == 0 and checked.changed == 2, checked.output[-3000:]
        assert "+    uid: ldaptest" in checked.output and "+    memberUid: ldaptest" in checked.output
        assert "test-password-1" not in checked.output
        assert L.find_users(reader, ldap["user_base"], ["ldaptest"]) == {}  # check mode wrote nothing

        first = play(str(playbook), "--diff")
        assert first.rc == 0 and first.changed == 2, first.output[-3000:]
        assert L.resolve_groups(reader, ldap["group_base"], ["ldaptestgrp"]) == {"ldaptestgrp": ["ldaptest"]}

        second = play(str(playbook))
        assert second.rc == 0 and second.changed == 0, second.output[-3000:]
        assert play(str(playbook), "--check").changed == 0
    finally:
        removed = play(str(cleanup))
        assert removed.rc == 0, removed.output[-3000:]
    assert L.find_users(reader, ldap["user_base"], ["ldaptest"]) == {}


def test_bind_refused_leaves_client_config_untouched(identity):
    before = {f: sha256(f) for f in CLIENT_FILES}
    run = play("identity.yml", "--tags", "ldap_client", extra_vars={"ldap_client_bind_password": "wrong-password"})
    assert run.rc != 0
    assert "bind refused for cn=reader" in run.output and "invalid credentials" in run.output
    assert {f: sha256(f) for f in CLIENT_FILES} == before


def test_slapd_stopped_fails_clearly_and_leaves_client_config_untouched(identity):
    before = {f: sha256(f) for f in CLIENT_FILES}
    assert slapd("stop").returncode == 0
    try:
        run = play("identity.yml", "--tags", "ldap_client")
    finally:
        assert slapd("start").returncode == 0
        wait_for_directory()
    assert run.rc != 0
    assert "directory unreachable: cannot connect to ldap://127.0.0.1:389" in run.output
    assert "slapd is running" in run.output
    assert {f: sha256(f) for f in CLIENT_FILES} == before
    assert sh("getent", "passwd", "alice").returncode == 0  # and the node still resolves users
