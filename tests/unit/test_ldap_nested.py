"""Effective (nested) membership: the one reading the lookup, the sync module, the PKI user list and
the audit share (module_utils/_core/ldap.py effective_members), against ldap3's in-memory directory laid
out as each schema stores it."""

from __future__ import annotations

import ldap3
import pytest

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as L
from ansible_collections.onprem.daskhpc.plugins.module_utils import slurm_ldap_sync as sync

AD = "DC=ad,DC=t"
USERS = "CN=Users,DC=ad,DC=t"
BIS = "dc=t"
PEOPLE = "ou=people,dc=t"
GROUPS = "ou=groups,dc=t"


def connection(*entries):
    server = ldap3.Server("mock", get_info=ldap3.NONE)
    c = ldap3.Connection(server, user="cn=admin", password="pw", client_strategy=ldap3.MOCK_SYNC,
                         raise_exceptions=True)
    c.strategy.add_entry("cn=admin", {"userPassword": "pw", "sn": "admin"})
    c.bind()
    for dn, attrs in entries:
        c.strategy.add_entry(dn, attrs)
    return c


def ad_user(name, number):
    return ("CN=%s,%s" % (name.title(), USERS),  # AD names entries by full name, not by login
            {"objectClass": ["top", "person", "organizationalPerson", "user"], "cn": name.title(),
             "sAMAccountName": name, "uidNumber": str(number), "gidNumber": "100"})


def ad_group(name, *members):
    attributes = {"objectClass": ["top", "group"], "cn": name, "member": ["CN=%s,%s" % (m, USERS) for m in members]}
    return ("CN=%s,%s" % (name, USERS), attributes)


@pytest.fixture
def ad():
    """datasci contains alice and ml-team; ml-team contains Bob; a loop between two groups."""
    return connection(
        (AD, {"objectClass": ["domain"], "dc": "ad"}),
        (USERS, {"objectClass": ["container"], "cn": "Users"}),
        ad_user("alice", 10001), ad_user("bob", 10002), ad_user("carol", 10003),
        ad_group("datasci", "Alice", "ml-team"),
        ad_group("ml-team", "Bob"),
        ad_group("loop-a", "loop-b", "Carol"),
        ad_group("loop-b", "loop-a"),
    )


def test_ad_nested_member_is_found_with_the_chain_that_gives_access(ad):
    assert L.effective_members(ad, USERS, ["datasci"], "ad") == {
        "datasci": {"alice": ["datasci"], "bob": ["datasci", "ml-team"]}}


def test_ad_login_name_is_samaccountname_not_the_cn(ad):
    assert L.resolve_groups(ad, USERS, ["ml-team"], "ad") == {"ml-team": ["bob"]}
    assert set(L.find_users(ad, USERS, ["bob", "Bob"], ("uidNumber",), "ad")) == {"bob"}


def test_a_cycle_ends_where_it_closes(ad):
    assert L.effective_members(ad, USERS, ["loop-a"], "ad") == {"loop-a": {"carol": ["loop-a"]}}
    assert L.effective_members(ad, USERS, ["loop-b"], "ad") == {"loop-b": {"carol": ["loop-b", "loop-a"]}}


def test_nesting_deeper_than_sssd_follows_is_not_membership():
    chain = [("g%d" % i, "g%d" % (i + 1)) for i in range(L.MAX_NESTING + 1)]
    conn = connection((AD, {"objectClass": ["domain"]}), (USERS, {"objectClass": ["container"]}),
                      ad_user("deep", 10009), *[ad_group(g, m) for g, m in chain],
                      ad_group("g%d" % (L.MAX_NESTING + 1), "Deep"))
    assert L.effective_members(conn, USERS, ["g1"], "ad")["g1"]["deep"][0] == "g1"
    assert L.effective_members(conn, USERS, ["g0"], "ad") == {"g0": {}}


def test_the_shortest_chain_wins_when_there_are_several(ad):
    ad.strategy.add_entry(*ad_group("everyone", "datasci", "Bob"))
    assert L.effective_members(ad, USERS, ["everyone"], "ad")["everyone"] == {
        "alice": ["everyone", "datasci"], "bob": ["everyone"]}


def test_rfc2307bis_groups_nest_and_uid_dns_need_no_read():
    conn = connection(
        (BIS, {"objectClass": ["dcObject"]}), (PEOPLE, {"objectClass": ["organizationalUnit"]}),
        (GROUPS, {"objectClass": ["organizationalUnit"]}),
        ("cn=datasci," + GROUPS, {"objectClass": ["groupOfNames"], "cn": "datasci",
                                  "member": ["uid=alice," + PEOPLE, "cn=ml-team," + GROUPS]}),
        ("cn=ml-team," + GROUPS, {"objectClass": ["groupOfNames"], "cn": "ml-team", "member": ["uid=bob," + PEOPLE]}),
    )
    assert L.effective_members(conn, GROUPS, ["datasci"], "rfc2307bis") == {
        "datasci": {"alice": ["datasci"], "bob": ["datasci", "ml-team"]}}
    # The older group_schema option reads the same way.
    assert L.resolve_groups(conn, GROUPS, ["datasci"], "groupOfNames") == {"datasci": ["alice", "bob"]}


def test_rfc2307_member_uids_cannot_name_groups():
    conn = connection((BIS, {"objectClass": ["dcObject"]}), (GROUPS, {"objectClass": ["organizationalUnit"]}),
                      ("cn=datasci," + GROUPS, {"objectClass": ["posixGroup"], "cn": "datasci", "gidNumber": "1",
                                                "memberUid": ["alice", "ml-team"]}))
    # memberUid holds names: "ml-team" is read as a user name (and the sync module would find no entry).
    assert L.effective_members(conn, GROUPS, ["datasci"]) == {
        "datasci": {"alice": ["datasci"], "ml-team": ["datasci"]}}


def test_sync_members_and_lookup_records_read_the_same_membership(ad):
    via = L.effective_members(ad, USERS, ["datasci"], "ad")
    by_group = {g: sorted(found) for g, found in via.items()}
    members, unknown, refused = sync.directory_members(ad, by_group, USERS, schema="ad")
    assert (members, unknown, refused) == (["alice", "bob"], [], [])
    records = L.member_records(ad, USERS, by_group, ["uidNumber"], "ad", via=via)
    assert [(r["uid"], r["via"], r["uidNumber"]) for r in records] == [
        ("alice", {"datasci": ["datasci"]}, ["10001"]), ("bob", {"datasci": ["datasci", "ml-team"]}, ["10002"])]


def test_schema_and_group_schema_must_fit():
    with pytest.raises(L.LdapError, match="does not fit directory schema ad.*Fix"):
        L.schema_settings("ad", "posixGroup")
    with pytest.raises(L.LdapError, match="not supported.*Fix"):
        L.schema_settings("openldap")
    assert L.schema_settings(None, "group")["schema"] == "ad"
