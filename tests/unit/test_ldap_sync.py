"""slurm_ldap_sync's plan and sacctmgr calls, against a recorded sacctmgr stand-in."""

from __future__ import annotations

import pytest

from ansible_collections.onprem.daskhpc.plugins.filter import ldap as ldap_filters
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import ldap as L
from ansible_collections.onprem.daskhpc.plugins.module_utils import slurm_ldap_sync as sync
from ansible_collections.onprem.daskhpc.plugins.module_utils.sacctmgr import Sacctmgr


class FakeSacctmgr:
    """Answers `show` from a table of associations and users; records every change."""

    def __init__(self, assocs, defaults, fail_on=None):
        self.assocs = assocs  # list of (cluster, account, user, qos, defaultqos)
        self.defaults = defaults  # {user: default account}
        self.changes = []
        self.fail_on = fail_on

    def __call__(self, argv):
        args = argv[1:]
        if "show" in args:
            return 0, self._show(args), ""
        self.changes.append(args)
        if self.fail_on and self.fail_on in " ".join(args):
            return 1, "", "Job(s) active, cancel job(s) before remove"
        return 0, "", ""

    def _show(self, args):
        entity = args[args.index("show") + 1]
        where = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("format="))
        if entity == "user":
            return "".join("%s|%s\n" % (u, d) for u, d in self.defaults.items()
                           if where.get("name", u) == u)
        rows = [r for r in self.assocs
                if where.get("account", r[1]) == r[1] and where.get("user", r[2]) == r[2]
                and where.get("cluster", r[0]) == r[0]]
        return "".join("|".join(r) + "\n" for r in rows)


BURST = [("lab", "burst", "", "burst", "burst"),
         ("lab", "burst", "alice", "burst", "burst"),
         ("lab", "burst", "bob", "normal", ""),
         ("lab", "burst", "root", "burst", "burst")]


def test_plan_adds_members_removes_leavers_fixes_qos():
    current = {"alice": {"QOS": "burst", "DefaultQOS": "burst"}, "bob": {"QOS": "normal", "DefaultQOS": ""},
               "dave": {"QOS": "burst", "DefaultQOS": "burst"}, "root": {}}
    changes = sync.plan(["alice", "bob", "carol"], current, "burst", exclude=["root"])
    assert changes == {"add": ["carol"], "remove": ["dave"], "fix_qos": ["bob"], "set_default": []}


def test_plan_without_qos_never_fixes_qos():
    assert sync.plan(["bob"], {"bob": {"QOS": "normal"}}, None)["fix_qos"] == []


def test_plan_sets_default_account_for_existing_users_only():
    changes = sync.plan(["alice", "newbie"], {}, None, defaults={"alice": "burst"}, account="production")
    assert changes["set_default"] == ["alice"]


def test_current_users_excludes_account_row():
    sacct = Sacctmgr(run=FakeSacctmgr(BURST, {}))
    assert sorted(sync.current_users(sacct, "burst", "lab")) == ["alice", "bob", "root"]
    assert sync.account_exists(sacct, "burst", "lab")
    assert not sync.account_exists(sacct, "nosuch", "lab")


def test_apply_runs_sacctmgr_with_immediate_and_parsable_reads():
    fake = FakeSacctmgr(BURST, {"alice": "burst", "bob": "burst", "root": "root"})
    sacct = Sacctmgr(run=fake)
    current = sync.current_users(sacct, "burst", "lab")
    changes = sync.plan(["alice", "carol"], current, "burst", exclude=["root"])
    sync.apply(sacct, changes, "burst", "lab", "burst")
    assert ["--immediate", "add", "user", "carol", "account=burst", "cluster=lab", "qos=burst",
            "defaultqos=burst"] in fake.changes
    assert fake.changes[-1] == ["--immediate", "delete", "user", "where", "account=burst", "cluster=lab", "name=bob"]


def test_removal_moves_default_account_first():
    assocs = BURST + [("lab", "production", "bob", "normal", "normal")]
    fake = FakeSacctmgr(assocs, {"bob": "burst"})
    sacct = Sacctmgr(run=fake)
    sync.apply(sacct, {"add": [], "remove": ["bob"], "fix_qos": []}, "burst", "lab")
    assert fake.changes == [
        ["--immediate", "modify", "user", "where", "name=bob", "set", "defaultaccount=production"],
        ["--immediate", "delete", "user", "where", "account=burst", "cluster=lab", "name=bob"],
    ]


def test_refused_removal_says_what_to_do():
    fake = FakeSacctmgr(BURST, {"bob": "production"}, fail_on="delete")
    with pytest.raises(sync.SyncError, match=r"scancel -u bob -A burst"):
        sync.apply(Sacctmgr(run=fake), {"add": [], "remove": ["bob"], "fix_qos": []}, "burst", "lab")


def test_allowed_groups_from_the_lab_model(lab_site):
    assert ldap_filters.ldap_burst_groups(lab_site) == ["datasci"]
    assert ldap_filters.ldap_allowed_groups(lab_site, "production") == ["datasci", "research"]
    assert ldap_filters.ldap_model(lab_site)["group_schema"] == "posixGroup"


def test_ldap_ssha_filter_reuses_rootpw_from_config():
    hashed = L.ssha_hash("admin-pw")
    config = "suffix dc=t\nrootpw    %s\ndirectory /x\n" % hashed
    assert ldap_filters.ldap_ssha("admin-pw", config) == hashed
    assert ldap_filters.ldap_ssha("changed", config) != hashed
    assert L.password_matches("admin-pw", ldap_filters.ldap_ssha("admin-pw", ""))
