"""The logic behind slurm_qos / slurm_account / slurm_cluster, against a recorded-format sacctmgr."""

from __future__ import annotations

import time

import pytest

from ansible_collections.onprem.daskhpc.plugins.module_utils import sacctmgr as sm
from ansible_collections.onprem.daskhpc.plugins.module_utils import slurm_accounting as sa


class FakeSacctmgr:
    """Answers `show` from a table in sacctmgr's --parsable2 --noheader format and records changes."""

    def __init__(self, tables):
        self.tables = tables  # entity -> list of dicts (keys are format fields)
        self.changes = []

    def __call__(self, argv):
        if "--immediate" in argv:
            self.changes.append(argv[1:])
            return 0, "", ""
        entity = argv[4]
        fmt = next(a for a in argv if a.startswith("format="))[len("format="):].split(",")
        where = dict(a.split("=", 1) for a in argv[5:] if not a.startswith("format="))
        rows = [r for r in self.tables.get(entity, [])
                if all(r.get("name", r.get("account", r.get("cluster"))) == v for k, v in where.items()
                       if k == "name")
                and all(r.get(k) == v for k, v in where.items() if k != "name")]
        return 0, "".join("|".join(r.get(f, "") for f in fmt) + "\n" for r in rows), ""


class FakeModule:
    def __init__(self, params, runner, check_mode=False):
        self.params = dict(params, sacctmgr_path="sacctmgr", command_timeout=60)
        self.check_mode = check_mode
        self._runner = runner


@pytest.fixture(autouse=True)
def recorded_sacctmgr(monkeypatch):
    """The modules run sacctmgr through sacctmgr_runner; here it answers from the fake."""
    monkeypatch.setattr(sa, "sacctmgr_runner", lambda module: module._runner)


def test_modules_run_sacctmgr_with_their_timeout(monkeypatch, tmp_path):
    monkeypatch.undo()
    hung = tmp_path / "sacctmgr"
    hung.write_text("#!/bin/sh\nsleep 300\n")  # slurmdbd that never answers
    hung.chmod(0o755)
    module = FakeModule(dict(WANTED, command_timeout=1, sacctmgr_path=str(hung)), None)
    module.params["command_timeout"] = 1
    started = time.monotonic()
    rc, _out, err = sa.Recorder(module)([str(hung), "show", "qos"])
    assert rc == 124 and "gave no answer within 1s" in err and time.monotonic() - started < 5


BURST_ROW = {"name": "burst", "description": "daskhpc burst policy for lab", "priority": "0",
             "maxtrespu": "cpu=16", "maxjobspu": "32", "maxsubmitpu": "200", "grptres": "cpu=24",
             "maxwall": "04:00:00", "flags": "DenyOnLimit"}
WANTED = {"name": "burst", "state": "present", "description": "daskhpc burst policy for lab", "priority": None,
          "max_tres_per_user": "cpu=16", "max_jobs_per_user": 32, "max_submit_jobs_per_user": 200,
          "grp_tres": "cpu=24", "max_wall": "04:00:00", "flags": ["DenyOnLimit"]}


def test_matching_qos_changes_nothing():
    fake = FakeSacctmgr({"qos": [dict(BURST_ROW)]})
    result = sa.ensure(FakeModule(WANTED, fake), "qos", sa.QOS_FIELDS)
    assert result["changed"] is False
    assert fake.changes == []


def test_only_the_differing_limits_are_set():
    fake = FakeSacctmgr({"qos": [dict(BURST_ROW, maxtrespu="cpu=8", grptres="cpu=12")]})
    result = sa.ensure(FakeModule(WANTED, fake), "qos", sa.QOS_FIELDS)
    assert result["changed"] is True
    assert fake.changes == [["--immediate", "modify", "qos", "where", "name=burst", "set",
                             "MaxTRESPerUser=cpu=16", "GrpTRES=cpu=24"]]
    assert result["diff"]["before"]["max_tres_per_user"] == "cpu=8"
    assert result["diff"]["after"]["max_tres_per_user"] == "cpu=16"


def test_missing_qos_is_added_with_every_managed_limit():
    fake = FakeSacctmgr({"qos": []})
    sa.ensure(FakeModule(WANTED, fake), "qos", sa.QOS_FIELDS)
    (change,) = fake.changes
    assert change[:4] == ["--immediate", "add", "qos", "burst"]
    assert "MaxWall=04:00:00" in change and "Flags=DenyOnLimit" in change and "MaxJobsPerUser=32" in change


def test_check_mode_reports_but_runs_no_change():
    fake = FakeSacctmgr({"qos": [dict(BURST_ROW, maxjobspu="4")]})
    module = FakeModule(WANTED, fake, check_mode=True)
    result = sa.ensure(module, "qos", sa.QOS_FIELDS)
    assert result["changed"] is True
    assert result["commands"] and fake.changes == []


def test_absent_qos_is_deleted_once():
    fake = FakeSacctmgr({"qos": [dict(BURST_ROW)]})
    sa.ensure(FakeModule(dict(WANTED, state="absent"), fake), "qos", sa.QOS_FIELDS)
    assert fake.changes == [["--immediate", "delete", "qos", "where", "name=burst"]]
    gone = FakeSacctmgr({"qos": []})
    assert sa.ensure(FakeModule(dict(WANTED, state="absent"), gone), "qos", sa.QOS_FIELDS)["changed"] is False


def test_equal_values_in_other_spellings_are_not_changes():
    # sacctmgr prints a day-long MaxWall as 1-00:00:00 and TRES in its own order.
    fake = FakeSacctmgr({"qos": [dict(BURST_ROW, maxwall="1-00:00:00", grptres="mem=1G,cpu=24")]})
    wanted = dict(WANTED, max_wall="24:00:00", grp_tres="cpu=24,mem=1G")
    assert sa.ensure(FakeModule(wanted, fake), "qos", sa.QOS_FIELDS)["changed"] is False


def test_account_description_compares_case_insensitively_like_sacctmgr_stores_it():
    fake = FakeSacctmgr({
        "account": [{"account": "burst", "descr": "preemptible burst work", "org": "lab"}],
        "association": [{"cluster": "lab", "account": "burst", "user": "", "parentname": "root", "qos": "burst",
                         "defaultqos": "burst"}],
    })
    params = {"name": "burst", "state": "present", "cluster": "lab", "description": "Preemptible burst work",
              "organization": "lab", "parent": None, "qos": ["burst"], "default_qos": "burst"}
    assert sa.ensure_account(FakeModule(params, fake))["changed"] is False


def test_account_qos_list_change_modifies_the_account_association():
    fake = FakeSacctmgr({
        "account": [{"account": "burst", "descr": "preemptible burst work", "org": "lab"}],
        "association": [{"cluster": "lab", "account": "burst", "user": "", "parentname": "root", "qos": "normal",
                         "defaultqos": "normal"}],
    })
    params = {"name": "burst", "state": "present", "cluster": "lab", "description": None, "organization": None,
              "parent": None, "qos": ["burst"], "default_qos": "burst"}
    sa.ensure_account(FakeModule(params, fake))
    assert fake.changes == [["--immediate", "modify", "account", "where", "name=burst", "cluster=lab", "set",
                             "QOS=burst", "DefaultQOS=burst"]]


def test_sacctmgr_failure_raises_with_its_message():
    def broken(argv):
        return 1, "", "sacctmgr: error: Problem talking to the database: Connection refused"
    with pytest.raises(sm.SacctmgrError, match="Connection refused"):
        sm.Sacctmgr(run=broken).show("qos", ["name"])


@pytest.mark.parametrize(("raw", "norm"), [("cpu=4,mem=1G", "cpu=4,mem=1G"), ("mem=1G,cpu=4", "cpu=4,mem=1G"),
                                           ("", ""), (-1, "")])
def test_tres_normalisation(raw, norm):
    assert sm.norm_tres(raw) == norm


def test_unreachable_slurmdbd_fails_the_module_with_an_actionable_message():
    class Failed(Exception):
        pass

    class FailingModule(FakeModule):
        def fail_json(self, msg):
            raise Failed(msg)

    def refused(argv):
        return 1, "", "sacctmgr: error: Problem talking to the database: Connection refused"

    module = FailingModule(WANTED, refused)
    with pytest.raises(Failed) as info:
        sa.run_or_fail(module, "QOS", lambda: sa.ensure(module, "qos", sa.QOS_FIELDS))
    assert "Could not manage QOS burst" in str(info.value)
    assert "Connection refused" in str(info.value) and "Is slurmdbd running" in str(info.value)
