"""Directory logic without a daemon: filters, password hashes, entry and member planning.

Entry operations run against ldap3's in-memory MOCK_SYNC strategy.
"""

from __future__ import annotations

import socket

import ldap3
import pytest

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as L

BASE = "dc=t"
PEOPLE = "ou=people,dc=t"
GROUPS = "ou=groups,dc=t"


@pytest.fixture
def conn():
    server = ldap3.Server("mock", get_info=ldap3.NONE)
    c = ldap3.Connection(server, user="cn=admin,dc=t", password="pw", client_strategy=ldap3.MOCK_SYNC,
                         raise_exceptions=True)
    c.strategy.add_entry("cn=admin,dc=t", {"userPassword": "pw", "sn": "admin"})
    c.bind()
    c.strategy.add_entry(BASE, {"objectClass": ["dcObject"], "dc": "t"})
    c.strategy.add_entry(PEOPLE, {"objectClass": ["organizationalUnit"], "ou": "people"})
    c.strategy.add_entry(GROUPS, {"objectClass": ["organizationalUnit"], "ou": "groups"})
    return c


def user(uid, number):
    return L.user_attributes({"uid": uid, "uid_number": number, "gid_number": 100})


# --- filters -------------------------------------------------------------------


def test_filter_values_are_escaped():
    assert L.eq_filter("uid", "*)(uid=*") == r"(uid=\2a\29\28uid=\2a)"
    assert L.eq_filter("cn", "a\\b") == r"(cn=a\5cb)"


def test_group_filter_rejects_unknown_schema():
    with pytest.raises(L.LdapError, match="posixGroup"):
        L.group_filter("x", "nisNetgroup")


def test_injection_in_group_name_matches_nothing(conn):
    L.ensure_group(conn, "cn=datasci," + GROUPS, {"name": "datasci", "gid_number": 1, "members": ["alice"]})
    with pytest.raises(L.GroupNotFound, match=r"not found.*Fix"):
        L.find_group(conn, GROUPS, "*)(cn=*")
    assert L.paged_search(conn, GROUPS, L.eq_filter("cn", "*")) == []
    # The unescaped filter would have matched: the escaping is what protects.
    assert L.paged_search(conn, GROUPS, "(cn=*)", ["cn"])


def test_injection_in_user_name_matches_nothing(conn):
    L.ensure_entry(conn, L.user_dn("alice", PEOPLE), L.USER_CLASSES, user("alice", 10001))
    assert L.find_users(conn, PEOPLE, ["*)(uid=*", "*"]) == {}
    assert set(L.find_users(conn, PEOPLE, ["alice", "*"])) == {"alice"}


# --- passwords -----------------------------------------------------------------


def test_ssha_round_trip_and_salt():
    first, second = L.ssha_hash("s3cret"), L.ssha_hash("s3cret")
    assert first.startswith("{SSHA}") and first != second
    assert L.password_matches("s3cret", first) and L.password_matches("s3cret", second)
    assert not L.password_matches("S3cret", first)


def test_password_matches_other_schemes():
    assert L.password_matches("pw", "pw")
    assert not L.password_matches("pw", "{CRYPT}$6$abc$def")
    assert not L.password_matches("pw", None)
    assert not L.password_matches("pw", "{SSHA}not-base64!")


def test_reuse_or_hash_keeps_a_matching_hash_only():
    stored = L.ssha_hash("old")
    assert L.reuse_or_hash("old", stored) == stored
    fresh = L.reuse_or_hash("new", stored)
    assert fresh != stored and L.password_matches("new", fresh)
    # A clear-text stored value is replaced by a hash even when it matches.
    assert L.reuse_or_hash("old", "old").startswith("{SSHA}")


# --- planning ------------------------------------------------------------------


def test_plan_entry_changes_only_what_differs():
    current = {"objectClass": ["top", "posixAccount"], "uid": ["a"], "loginShell": ["/bin/sh"], "mail": ["x@y"]}
    changes = L.plan_entry(current, {"uid": "a", "loginShell": "/bin/bash", "description": []},
                           ["top", "posixAccount", "inetOrgPerson"])
    assert changes == {"loginShell": ["/bin/bash"], "objectClass": ["top", "posixAccount", "inetOrgPerson"]}


def test_plan_entry_deletes_attribute_given_as_empty():
    assert L.plan_entry({"description": ["old"]}, {"description": []}, []) == {"description": []}


@pytest.mark.parametrize(("mode", "wanted", "expected"), [
    ("exact", ["carol", "alice"], ["carol", "alice"]),
    ("append", ["carol", "alice"], ["alice", "bob", "carol"]),
    ("remove", ["bob", "zed"], ["alice"]),
])
def test_plan_members(mode, wanted, expected):
    assert L.plan_members(["alice", "bob"], wanted, mode) == expected


def test_plan_members_rejects_unknown_mode():
    with pytest.raises(L.LdapError, match="exact, append or remove"):
        L.plan_members([], [], "replace")


def test_user_attributes_defaults():
    attrs = L.user_attributes({"uid": "alice", "uid_number": 10001, "gid_number": 100, "cn": "Alice Lab"})
    assert attrs["homeDirectory"] == "/home/alice"
    assert attrs["sn"] == "Lab"
    assert attrs["loginShell"] == "/bin/bash"


def test_group_entry_rules():
    with pytest.raises(L.LdapError, match="gid_number is required"):
        L.group_entry({"name": "g"}, "posixGroup", PEOPLE, [])
    with pytest.raises(L.LdapError, match="at least one member"):
        L.group_entry({"name": "g"}, "groupOfNames", PEOPLE, [])
    classes, attrs = L.group_entry({"name": "g"}, "groupOfNames", PEOPLE, ["alice"])
    assert "groupOfNames" in classes and attrs["member"] == ["uid=alice," + PEOPLE]


def test_uid_from_dn():
    assert L.uid_from_dn("uid=alice,ou=people,dc=t") == "alice"
    assert L.uid_from_dn("cn=Alice,ou=people,dc=t") is None
    assert L.uid_from_dn("not a dn") is None


def test_plan_association_sync():
    add, remove = L.plan_association_sync(["alice", "bob", "root"], ["bob", "carol", "root"], exclude=["root"])
    assert (add, remove) == (["alice"], ["carol"])


# --- entries against the in-memory directory ------------------------------------


def test_ensure_entry_is_idempotent_and_hashes_password_once(conn):
    dn = L.user_dn("alice", PEOPLE)
    first = L.ensure_entry(conn, dn, L.USER_CLASSES, user("alice", 10001), password="pw1")
    assert first["changed"] and first["password_changed"]
    stored = L.first(L.read_entry(conn, dn)["attributes"], "userPassword")
    assert stored.startswith("{SSHA}") and L.password_matches("pw1", stored)
    again = L.ensure_entry(conn, dn, L.USER_CLASSES, user("alice", 10001), password="pw1")
    assert not again["changed"] and not again["password_changed"]
    assert L.first(L.read_entry(conn, dn)["attributes"], "userPassword") == stored
    assert again["after"]["userPassword"] == "********"


def test_ensure_entry_check_mode_writes_nothing(conn):
    dn = L.user_dn("bob", PEOPLE)
    result = L.ensure_entry(conn, dn, L.USER_CLASSES, user("bob", 10002), check_mode=True)
    assert result["changed"] and result["after"]["uid"] == "bob"
    assert L.read_entry(conn, dn) is None


def test_update_password_on_create_leaves_existing_password(conn):
    dn = L.user_dn("carol", PEOPLE)
    L.ensure_entry(conn, dn, L.USER_CLASSES, user("carol", 10003), password="old")
    result = L.ensure_entry(conn, dn, L.USER_CLASSES, user("carol", 10003), password="new",
                            update_password="on_create")
    assert not result["changed"]
    assert L.password_matches("old", L.first(L.read_entry(conn, dn)["attributes"], "userPassword"))


def test_ensure_group_modes_and_order_insensitivity(conn):
    dn = L.group_dn("datasci", GROUPS)
    p = {"name": "datasci", "gid_number": 20001, "members": ["alice", "bob"]}
    assert L.ensure_group(conn, dn, p)["added"] == ["alice", "bob"]
    assert not L.ensure_group(conn, dn, dict(p, members=["bob", "alice"]))["changed"]
    removed = L.ensure_group(conn, dn, dict(p, members=["bob"], members_mode="remove"))
    assert removed["removed"] == ["bob"] and removed["members"] == ["alice"]
    appended = L.ensure_group(conn, dn, dict(p, members=["bob"], members_mode="append"))
    assert appended["added"] == ["bob"]
    assert L.resolve_groups(conn, GROUPS, ["datasci"]) == {"datasci": ["alice", "bob"]}


def test_ensure_group_refuses_schema_mismatch(conn):
    dn = L.group_dn("research", GROUPS)
    L.ensure_group(conn, dn, {"name": "research", "gid_number": 2, "members": ["carol"]})
    with pytest.raises(L.LdapError, match="not a groupOfNames"):
        L.ensure_group(conn, dn, {"name": "research", "schema": "groupOfNames", "members": ["carol"],
                                  "user_base": PEOPLE})


def test_group_of_names_members_resolve_to_uids(conn):
    dn = L.group_dn("ops", GROUPS)
    L.ensure_group(conn, dn, {"name": "ops", "schema": "groupOfNames", "members": ["dave"], "user_base": PEOPLE})
    assert L.resolve_groups(conn, GROUPS, ["ops"], "groupOfNames") == {"ops": ["dave"]}


def test_missing_group_ignore(conn):
    assert L.resolve_groups(conn, GROUPS, ["nosuch"], missing="ignore") == {"nosuch": []}
    with pytest.raises(L.GroupNotFound, match="nosuch"):
        L.resolve_groups(conn, GROUPS, ["nosuch"])


def test_member_records_flag_members_without_entry(conn):
    L.ensure_entry(conn, L.user_dn("alice", PEOPLE), L.USER_CLASSES, user("alice", 10001))
    records = L.member_records(conn, PEOPLE, {"datasci": ["alice", "ghost"]}, ["uidNumber"])
    assert records[0] == {"uid": "alice", "groups": ["datasci"], "uidNumber": ["10001"]}
    assert records[1] == {"uid": "ghost", "groups": ["datasci"], "missing_entry": True}


def test_delete_entry(conn):
    dn = L.user_dn("mallory", PEOPLE)
    assert not L.delete_entry(conn, dn)["changed"]
    L.ensure_entry(conn, dn, L.USER_CLASSES, user("mallory", 10004))
    assert L.delete_entry(conn, dn, check_mode=True)["changed"]
    assert L.read_entry(conn, dn) is not None
    assert L.delete_entry(conn, dn)["changed"]
    assert L.read_entry(conn, dn) is None


# --- connection errors (no daemon needed) ----------------------------------------


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_directory_is_named():
    with pytest.raises(L.DirectoryUnreachable, match=r"directory unreachable.*slapd is running"):
        L.connect("ldap://127.0.0.1:%d" % _closed_port(), start_tls=False, timeout=2)


def test_tls_without_ca_file_is_refused():
    with pytest.raises(L.TlsFailed, match="no CA file"):
        L.connect("ldaps://127.0.0.1:1", ca_file=None)


def test_missing_ca_file_is_named(tmp_path):
    with pytest.raises(L.TlsFailed, match="does not exist"):
        L.connect("ldap://127.0.0.1:1", ca_file=str(tmp_path / "nope.pem"))


def test_bad_uri():
    with pytest.raises(L.LdapError, match="not an LDAP URI"):
        L.connect("http://example.org", start_tls=False)
