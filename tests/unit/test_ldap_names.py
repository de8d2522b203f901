"""Directory data are data, not commands: hostile member names never reach sacctmgr or any command.

Whoever can edit a group's memberUid (or a groupOfNames member DN) tries names that sacctmgr or the
next command would read as something else; each must be refused, reported, and never passed on.
"""

from __future__ import annotations

import json
import pwd
import sys

import ldap3
import pytest

from ansible_collections.onprem.daskhpc.plugins.filter import pki as pki_filters
from ansible_collections.onprem.daskhpc.plugins.module_utils import account_names
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as L
from ansible_collections.onprem.daskhpc.plugins.module_utils import slurm_ldap_sync as sync
from ansible_collections.onprem.daskhpc.plugins.module_utils.sacctmgr import Sacctmgr, SacctmgrError

PEOPLE, GROUPS = "ou=people,dc=t", "ou=groups,dc=t"
HOSTILE = {
    "alice,root": "portable",   # sacctmgr reads name=alice,root as two users
    "root": "system account",
    "bob --foo": "portable",    # whitespace: an option for the next command
    "--foo": "portable",
    "x=y": "portable",          # another key=value to sacctmgr
    "a" * 40: "portable",       # longer than POSIX and sacctmgr allow
    "alice\n": "portable",      # a newline `$` would have let through
    "Alice": "portable",
    "../../etc": "portable",
    "daemon": "system account",
    "slurm": "system account",
    "": "portable",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_names_are_refused_with_the_reason(name):
    assert HOSTILE[name] in account_names.refusal(name, lookup=False)


@pytest.mark.parametrize("name", ["alice", "bob", "_svc", "a-b_c9", "x" * 32])
def test_portable_names_pass(name):
    assert account_names.refusal(name, 10001, lookup=False) is None


def test_system_uids_are_refused_where_the_uid_is_known():
    assert "uid 999 is below 1000" in account_names.refusal("svc", 999, lookup=False)
    assert "not a number" in account_names.refusal("svc", "12; rm", lookup=False)
    assert "below 5000" in account_names.refusal("alice", 4000, min_uid=5000, lookup=False)
    local = next((e for e in pwd.getpwall() if e.pw_uid < 1000 and account_names.PORTABLE.fullmatch(e.pw_name)
                  and e.pw_name not in account_names.RESERVED), None)
    if local:  # a local system account the reserved list does not name: its local uid gives it away
        assert "a system account" in account_names.refusal(local.pw_name)


def test_settings_can_only_be_stricter():
    with pytest.raises(ValueError, match="not lowered"):
        account_names.check_settings(min_uid=500)
    with pytest.raises(ValueError, match="not a regular expression"):
        account_names.check_settings(pattern="(")
    loose = account_names.check_settings(pattern=".*")
    assert account_names.refusal("alice,root", pattern=loose, lookup=False)  # the base rule still applies
    strict = account_names.check_settings(pattern="[a-z]{2,8}")
    assert "name_pattern" in account_names.refusal("a_b", pattern=strict, lookup=False)


# --- through the directory and sacctmgr ---------------------------------------------------------------


@pytest.fixture
def conn():
    server = ldap3.Server("mock", get_info=ldap3.NONE)
    c = ldap3.Connection(server, user="cn=admin,dc=t", password="pw", client_strategy=ldap3.MOCK_SYNC,
                         raise_exceptions=True)
    c.strategy.add_entry("cn=admin,dc=t", {"userPassword": "pw", "sn": "admin"})
    c.bind()
    for dn, attrs in (("dc=t", {"objectClass": ["dcObject"], "dc": "t"}),
                      (PEOPLE, {"objectClass": ["organizationalUnit"], "ou": "people"}),
                      (GROUPS, {"objectClass": ["organizationalUnit"], "ou": "groups"})):
        c.strategy.add_entry(dn, attrs)
    for uid, number in (("alice", 10001), ("bob", 10002), ("svc", 500)):
        L.ensure_entry(c, L.user_dn(uid, PEOPLE), L.USER_CLASSES,
                       L.user_attributes({"uid": uid, "uid_number": number, "gid_number": 100}))
    members = ["alice", "bob", "svc"] + sorted(HOSTILE)
    c.strategy.add_entry("cn=datasci," + GROUPS, {"objectClass": ["posixGroup"], "cn": "datasci",
                                                  "gidNumber": 20001, "memberUid": [m for m in members if m]})
    c.strategy.add_entry("cn=team," + GROUPS, {"objectClass": ["groupOfNames"], "cn": "team",
                                               "member": ["uid=alice,%s" % PEOPLE, "uid=alice\\,root,%s" % PEOPLE,
                                                          "uid=root,%s" % PEOPLE]})
    return c


@pytest.mark.parametrize("schema", ["posixGroup", "groupOfNames"])
def test_only_accepted_members_come_out_of_the_directory(conn, schema):
    group = "datasci" if schema == "posixGroup" else "team"
    by_group = L.resolve_groups(conn, GROUPS, [group], schema)
    members, unknown, refused = sync.directory_members(conn, by_group, PEOPLE)
    assert members == (["alice", "bob"] if schema == "posixGroup" else ["alice"])
    assert unknown == []
    reasons = {r["name"]: r["reason"] for r in refused}
    assert "root" in reasons and any(n.startswith("alice") and n.endswith("root") for n in reasons)
    if schema == "posixGroup":
        assert "uid 500 is below 1000" in reasons["svc"]  # its uidNumber in the directory
        assert set(reasons) == {n for n in HOSTILE if n} | {"svc"}


class RecordingSacctmgr:
    """sacctmgr stand-in: the burst account exists, root holds an association; every argv is kept."""

    def __init__(self):
        self.argvs = []

    def __call__(self, argv):
        self.argvs.append(argv)
        if "show" in argv and "association" in argv:
            return 0, "lab|burst||burst|burst\nlab|burst|root|burst|burst\n", ""
        return 0, "", ""


def test_hostile_names_never_reach_sacctmgr(conn):
    fake = RecordingSacctmgr()
    sacct = Sacctmgr(run=fake)
    members, _unknown, refused = sync.directory_members(conn, L.resolve_groups(conn, GROUPS, ["datasci"]), PEOPLE)
    current = sync.current_users(sacct, "burst", "lab")
    changes = sync.plan(members, current, "burst", exclude=["root"])
    sync.apply(sacct, changes, "burst", "lab", "burst")
    assert changes["add"] == ["alice", "bob"] and changes["remove"] == []
    every_arg = [arg for argv in fake.argvs for arg in argv]
    for item in refused:
        assert not any(item["name"] and item["name"] in arg.split("=", 1)[-1].split(",") for arg in every_arg)
    assert "alice,root" not in " ".join(every_arg) and "--foo" not in every_arg


@pytest.mark.parametrize("name", ["alice,root", "x=y", "bob --foo", "-v", ""])
def test_sacctmgr_itself_refuses_a_name_that_is_not_one_value(name):
    fake = RecordingSacctmgr()
    with pytest.raises(SacctmgrError, match="more than one value"):
        Sacctmgr(run=fake).add("user", name, {"account": "burst"})
    with pytest.raises(SacctmgrError):
        Sacctmgr(run=fake).delete("user", {"account": "burst", "name": name})
    assert fake.argvs == []


# --- the module -------------------------------------------------------------------------------------------


def test_module_reports_refused_members_and_passes_none_on(conn, monkeypatch, tmp_path, capsys):
    from ansible.module_utils import basic

    from ansible_collections.onprem.daskhpc.plugins.modules import slurm_ldap_sync

    log = tmp_path / "sacctmgr.log"
    fake = tmp_path / "sacctmgr"
    fake.write_text("#!%s\nimport json, sys\nopen(%r, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "if 'show' in sys.argv and 'association' in sys.argv:\n    print('lab|burst||burst|burst')\n"
                    % (sys.executable, str(log)))
    fake.chmod(0o755)
    monkeypatch.setattr(L, "connect_params", lambda params: conn)
    args = {"server_uri": "ldap://mock", "groups": ["datasci"], "group_base": GROUPS, "user_base": PEOPLE,
            "account": "burst", "cluster": "lab", "qos": "burst", "sacctmgr": str(fake), "command_timeout": 10}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    with pytest.raises(SystemExit):
        slurm_ldap_sync.main()
    result = json.loads(capsys.readouterr().out)
    assert not result.get("failed"), result
    assert result["added"] == ["alice", "bob"] and result["members"] == ["alice", "bob"]
    assert {r["name"] for r in result["refused"]} == {n for n in HOSTILE if n} | {"svc"}
    assert result["groups"] == {"datasci": ["alice", "bob"]}
    argvs = [json.loads(line) for line in log.read_text().splitlines()]
    added = [a[a.index("add") + 2] for a in argvs if "add" in a]
    assert added == ["alice", "bob"]


def test_module_refuses_a_weaker_min_uid(monkeypatch, capsys):
    from ansible.module_utils import basic

    from ansible_collections.onprem.daskhpc.plugins.modules import slurm_ldap_sync

    args = {"server_uri": "ldap://mock", "groups": ["datasci"], "group_base": GROUPS, "account": "burst",
            "min_uid": 100}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    with pytest.raises(SystemExit):
        slurm_ldap_sync.main()
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] and "not lowered" in result["msg"]


# --- user credentials: the same rule before getent, paths and certificates -----------------------------------


def test_user_credentials_check_names_before_getent_and_uids_after():
    checked = pki_filters.pki_account_names(["alice", "alice,root", "--service=files", "root"])
    assert checked["accepted"] == ["alice"]
    assert {r["name"] for r in checked["refused"]} == {"alice,root", "--service=files", "root"}
    getent = [{"item": "alice", "ansible_facts": {"getent_passwd": {"alice": ["x", "10001", "100", "", "/home/a",
                                                                              "/bin/sh"]}}},
              {"item": "svc", "ansible_facts": {"getent_passwd": {"svc": ["x", "998", "998", "", "/var/lib/svc",
                                                                          "/bin/sh"]}}}]
    assert [r["subject"]["CN"] for r in pki_filters.pki_user_requests(getent)] == ["alice"]
    assert pki_filters.pki_refused_users(getent) == [{"name": "svc", "reason": "uid 998 is below 1000: a system "
                                                                               "account"}]
    with pytest.raises(Exception, match="not lowered"):
        pki_filters.pki_account_names(["alice"], min_uid=0)
