"""PBS configuration logic (module_utils/_core/pbs.py) against recorded-format qmgr and qstat outputs.

The fixtures in tests/fixtures/pbs are written in the exact formats OpenPBS prints (qmgr.c display(),
qstat.c prt_attr(), pbs_json.c generate_json()); no PBS server runs here (see docs/pbs.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pbs, site_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pbs"
REPO = Path(__file__).resolve().parents[2]


def fixture(name):
    return (FIXTURES / name).read_text()


def example_model():
    site = yaml.safe_load((REPO / "inventories/example-pbs/group_vars/all/site.yml").read_text())["daskhpc_site"]
    return site_model.validate(site)


class Recorded(pbs.CommandRunner):
    """Serves recorded qmgr output; records every command; switches to the post-change state once a
    changing command has run (as the real server would)."""

    def __init__(self, before, after=None, sched=None, fail=None):
        self.outputs = {"print server": before, "print sched": sched or fixture("print_sched_default.txt")}
        self.after = after
        self.fail = fail or {}
        self.calls = []

    def run(self, argv):
        assert argv[:2] == ["qmgr", "-c"], argv
        command = argv[2]
        self.calls.append(command)
        if command in self.fail:
            return 1, "", self.fail[command]
        if command in self.outputs:
            return 0, self.outputs[command], ""
        if self.after is not None:
            self.outputs["print server"] = self.after
        return 0, "", ""

    @property
    def changes(self):
        return [c for c in self.calls if not c.startswith("print")]


# --- parsing -----------------------------------------------------------------------------------------


def test_print_server_reads_resources_queues_and_server():
    state = pbs.parse_print(fixture("print_server_converged.txt"))
    assert state["resources"] == {"ngpus": {"type": "long", "flag": "hn"}}
    assert list(state["queues"]) == ["workq", "prod", "bigmem", "burst"]
    burst = state["queues"]["burst"]
    assert burst["max_run_res.ncpus"] == ["[o:PBS_ALL=256]", "[u:PBS_GENERIC=64]"]  # '=' then '+='
    assert state["queues"]["prod"]["acl_groups"] == ["datasci", "research"]
    assert state["server"]["managers"] == ["root@pbs-head", "admin@pbs-head"]
    assert state["server"]["default_queue"] == ["prod"]


def test_print_sched_reads_quoted_values():
    sched = pbs.parse_print(fixture("print_sched_default.txt"))["sched"]
    assert sched["default"]["preempt_prio"] == ["express_queue, normal_jobs"]
    assert sched["default"]["preempt_order"] == ["SCR"]


def test_print_with_quotes_and_named_scheduler():
    text = "\n".join([
        "create sched multi",
        "set sched multi preempt_order = \"SCR 80 SC 50 S\"",
        "set queue q comment = 'say \"hi\", then go'",
        "set server default_qsub_arguments = \"-r y -m n\"",
    ])
    state = pbs.parse_print(text)
    assert state["sched"]["multi"]["preempt_order"] == ["SCR 80 SC 50 S"]
    assert state["queues"]["q"]["comment"] == ['say "hi", then go']
    assert state["server"]["default_qsub_arguments"] == ["-r y -m n"]


def test_qstat_queue_json_keeps_repeated_keys():
    queues = pbs.parse_qstat_queues(fixture("qstat_Qf.json"))
    assert queues["burst"]["max_run_res.ncpus"] == ["[o:PBS_ALL=256]", "[u:PBS_GENERIC=64]"]
    assert queues["burst"]["kill_delay"] == ["120"]  # a JSON number, read back as qmgr's text
    assert queues["prod"]["resources_default.preempt_targets"] == ["queue=burst"]
    assert queues["prod"]["acl_groups"] == ["datasci,research"]


def test_qstat_and_print_agree_on_every_managed_attribute():
    printed = pbs.parse_print(fixture("print_server_converged.txt"))["queues"]
    stat = pbs.parse_qstat_queues(fixture("qstat_Qf.json"))
    for name in ("prod", "bigmem", "burst"):
        a = pbs.current_attributes("queue", printed[name])
        b = pbs.current_attributes("queue", {k: v for k, v in stat[name].items() if k in printed[name]})
        assert a == b, name
        assert set(printed[name]) <= set(stat[name])


def test_pbs_json_rejects_garbage():
    with pytest.raises(pbs.PbsError, match="does not parse"):
        pbs.parse_qstat_queues("qstat: cannot connect to server")


@pytest.mark.parametrize("line, expected", [
    ("set queue burst Priority = 1", ("set", "queue", "burst", "Priority", "=", "1")),
    ("set queue burst max_run_res.ncpus += [u:PBS_GENERIC=64]",
     ("set", "queue", "burst", "max_run_res.ncpus", "+=", "[u:PBS_GENERIC=64]")),
    ("set server default_queue = prod", ("set", "server", None, "default_queue", "=", "prod")),
    ("set sched preempt_order = RD", ("set", "sched", None, "preempt_order", "=", "RD")),
    ("unset queue burst kill_delay", ("unset", "queue", "burst", "kill_delay", None, None)),
])
def test_parse_qmgr_command(line, expected):
    cmd = pbs.parse_qmgr_command(line)
    assert (cmd["verb"], cmd["object"], cmd["name"], cmd["attribute"], cmd["op"], cmd["value"]) == expected


@pytest.mark.parametrize("value, quoted", [
    ("prod", "prod"), ("queue=burst", "queue=burst"), ("express_queue, normal_jobs", '"express_queue, normal_jobs"'),
    ("a,b", '"a,b"'), ('say "x"', "'say \"x\"'"), ("", '""'),
])
def test_quote_follows_qmgr(value, quoted):
    assert pbs.quote(value) == quoted


# --- validation and normalisation ----------------------------------------------------------------------


def test_equal_values_in_other_spellings_are_equal():
    same = [("resources_max.mem", "2gb", "2048mb"), ("resources_max.walltime", 14400, "04:00:00"),
            ("enabled", True, "True"), ("enabled", "t", "TRUE"), ("acl_groups", ["b", "a"], "a,b"),
            ("max_run_res.ncpus", ["[u:PBS_GENERIC=64]", "[o:PBS_ALL=256]"], "[o:PBS_ALL=256],[u:PBS_GENERIC=64]"),
            ("queue_type", "e", "Execution")]
    for attr, left, right in same:
        kind = pbs.attribute_kind("queue", attr)
        assert pbs.normalise(kind, left, attr)[1] == pbs.normalise(kind, right, attr)[1], attr


def test_display_is_what_qmgr_prints():
    assert pbs.validate_attributes("queue", {"resources_max.walltime": 14400, "enabled": "yes",
                                             "max_run_res.ncpus": ["[u:PBS_GENERIC=4]", "[o:PBS_ALL=8]"]}) == {
        "resources_max.walltime": (["04:00:00"], 14400),
        "enabled": (["True"], True),
        "max_run_res.ncpus": (["[o:PBS_ALL=8]", "[u:PBS_GENERIC=4]"], (("o", "PBS_ALL", 8), ("u", "PBS_GENERIC", 4))),
    }


@pytest.mark.parametrize("object_type, attributes, message", [
    ("queue", {"priority": 1}, r"unknown attribute \(did you mean Priority\?\).*pbs_queue_attributes\(7B\)"),
    ("queue", {"max_cpus": 4}, r"'max_cpus'.*unknown attribute"),
    ("server", {"preempt_order": "R"}, r"server attribute 'preempt_order': unknown attribute"),
    ("queue", {"resources_max.ncpu": 4}, r"unknown resource 'ncpu'.*create resource ncpu"),
    ("queue", {"max_run_res.arch": "[u:PBS_GENERIC=1]"}, r"numeric resources only"),
    ("queue", {"resources_max": "4"}, r"name the resource"),
    ("queue", {"Priority": "high"}, r"'Priority'.*'high' is not a whole number"),
    ("queue", {"enabled": "maybe"}, r"'enabled'.*not a boolean"),
    ("queue", {"resources_max.walltime": "4h"}, r"'4h' is not a PBS duration.*HH:MM:SS"),
    ("queue", {"resources_max.mem": "lots"}, r"not a PBS size"),
    ("queue", {"max_run": ["[x:alice=1]"]}, r"not an entity limit.*\[u:PBS_GENERIC=16\]"),
    ("queue", {"max_run": ["[o:alice=3]"]}, r"overall limit 'o' takes PBS_ALL"),
    ("queue", {"max_run": ["[u:PBS_ALL=3]"]}, r"PBS_ALL goes with 'o'"),
    ("queue", {"max_run": ["[u:bob=1]", "[u:bob=2]"]}, r"limited twice"),
    ("queue", {"max_run_res.ncpus": ["[u:PBS_GENERIC=many]"]}, r"not a whole number"),
    ("queue", {"queue_type": "batch"}, r"Execution or Route"),
    ("queue", {"Priority": None}, r"has no value"),
    ("sched", {"preempt_order": "X"}, r"not a preempt_order.*R \(requeue\)"),
    ("sched", {"preempt_prio": "express_queue, fast_jobs"}, r"'fast_jobs' is not a preemption level"),
    ("sched", {"preempt_sort": "oldest"}, r"min_time_since_start"),
])
def test_bad_input_is_refused_with_the_fix(object_type, attributes, message):
    with pytest.raises(pbs.PbsError, match=message):
        pbs.validate_attributes(object_type, attributes)


def test_site_resources_come_from_print_server():
    state = pbs.parse_print(fixture("print_server_converged.txt"))
    resources = pbs.site_resources(state)
    assert pbs.validate_attributes("queue", {"max_run_res.ngpus": ["[u:PBS_GENERIC=2]"]}, resources)
    with pytest.raises(pbs.PbsError, match="unknown resource 'ngpus'"):
        pbs.validate_attributes("queue", {"max_run_res.ngpus": ["[u:PBS_GENERIC=2]"]})


# --- planning and the modules' logic -------------------------------------------------------------------


def desired(name):
    return next(q["attributes"] for q in pbs.pbs_queues(example_model()) if q["name"] == name)


def test_drifted_queue_gets_exactly_the_differences():
    runner = Recorded(fixture("print_server_drifted.txt"), after=fixture("print_server_converged.txt"))
    result = pbs.ensure_queue(pbs.Qmgr(runner), "burst", desired("burst"))
    assert result["changed"]
    assert runner.changes == [
        "set queue burst Priority = 1",
        "set queue burst acl_groups = datasci",
        "set queue burst kill_delay = 120",
        'set queue burst max_run_res.ncpus = "[o:PBS_ALL=256],[u:PBS_GENERIC=64]"',
    ]
    assert [c["attribute"] for c in result["changes"]] == ["Priority", "acl_groups", "kill_delay", "max_run_res.ncpus"]
    assert result["diff"]["before"]["Priority"] == "100"
    assert result["diff"]["after"]["Priority"] == "1"
    assert result["diff"]["after"]["acl_groups"] == "datasci"


def test_second_run_against_post_change_state_changes_nothing():
    runner = Recorded(fixture("print_server_drifted.txt"), after=fixture("print_server_converged.txt"))
    qmgr = pbs.Qmgr(runner)
    pbs.ensure_queue(qmgr, "burst", desired("burst"))
    again = pbs.ensure_queue(qmgr, "burst", desired("burst"))
    assert not again["changed"] and again["commands"] == []
    assert runner.calls[-1] == "print server"


@pytest.mark.parametrize("name", ["prod", "bigmem", "burst"])
def test_converged_fixture_is_what_the_model_derives(name):
    runner = Recorded(fixture("print_server_converged.txt"))
    result = pbs.ensure_queue(pbs.Qmgr(runner), name, desired(name))
    assert result["commands"] == [] and runner.changes == []


def test_check_mode_runs_no_changing_command():
    runner = Recorded(fixture("print_server_initial.txt"))
    result = pbs.ensure_queue(pbs.Qmgr(runner), "burst", desired("burst"), check_mode=True)
    assert result["changed"]
    assert runner.calls == ["print server"]
    assert result["commands"][0] == "create queue burst"


def test_new_queue_is_created_typed_first_and_enabled_last():
    runner = Recorded(fixture("print_server_initial.txt"))
    result = pbs.ensure_queue(pbs.Qmgr(runner), "burst", desired("burst"))
    commands = runner.changes
    assert commands == result["commands"]
    assert commands[:2] == ["create queue burst", "set queue burst queue_type = Execution"]
    assert commands[-2:] == ["set queue burst enabled = True", "set queue burst started = True"]
    assert commands.index("set queue burst acl_groups = datasci") < commands.index("set queue burst enabled = True")
    assert "set queue burst max_queued = [u:PBS_GENERIC=500]" in commands
    assert "set queue burst resources_default.preempt_targets = NONE" in commands
    assert result["diff"]["before"] == {}


def test_new_queue_needs_a_type():
    runner = Recorded(fixture("print_server_initial.txt"))
    with pytest.raises(pbs.PbsError, match="queue_type is not given"):
        pbs.ensure_queue(pbs.Qmgr(runner), "newq", {"Priority": 5})
    assert runner.changes == []


def test_bad_attribute_fails_before_any_change():
    runner = Recorded(fixture("print_server_drifted.txt"))
    with pytest.raises(pbs.PbsError, match="unknown attribute"):
        pbs.ensure_queue(pbs.Qmgr(runner), "burst", dict(desired("burst"), max_cpus=3))
    assert runner.changes == []


def test_purge_unsets_what_the_model_does_not_set():
    runner = Recorded(fixture("print_server_converged.txt"))
    wanted = {k: v for k, v in desired("burst").items() if k != "max_queued"}
    result = pbs.ensure_queue(pbs.Qmgr(runner), "burst", wanted, purge=True)
    assert result["commands"] == ["unset queue burst max_queued"]
    assert "max_queued" not in result["diff"]["after"]


def test_absent_deletes_and_is_idempotent():
    runner = Recorded(fixture("print_server_converged.txt"))
    assert pbs.ensure_queue(pbs.Qmgr(runner), "workq", state="absent")["commands"] == ["delete queue workq"]
    runner = Recorded(fixture("print_server_converged.txt"))
    assert pbs.ensure_queue(pbs.Qmgr(runner), "nosuch", state="absent")["changed"] is False
    assert runner.changes == []


def test_server_default_queue():
    runner = Recorded(fixture("print_server_initial.txt"))
    result = pbs.ensure_server(pbs.Qmgr(runner), pbs.pbs_server_attributes(example_model()))
    assert runner.changes == ["set server default_queue = prod"]  # scheduling is already True
    assert result["diff"]["before"]["default_queue"] == "workq"
    runner = Recorded(fixture("print_server_converged.txt"))
    assert pbs.ensure_server(pbs.Qmgr(runner), {"default_queue": "prod", "scheduling": True})["changed"] is False


def test_sched_preemption_policy():
    runner = Recorded(fixture("print_server_initial.txt"))
    result = pbs.ensure_sched(pbs.Qmgr(runner), pbs.pbs_sched_attributes(example_model()))
    assert runner.changes == ["set sched preempt_order = RD"]
    assert result["changes"] == [{"attribute": "preempt_order", "before": ["SCR"], "after": ["RD"]}]
    runner = Recorded(fixture("print_server_initial.txt"), sched=fixture("print_sched_converged.txt"))
    assert pbs.ensure_sched(pbs.Qmgr(runner), pbs.pbs_sched_attributes(example_model()))["changed"] is False


def test_sched_preempt_prio_printed_one_level_per_line_still_compares():
    text = fixture("print_sched_converged.txt").replace(
        'set sched preempt_prio = "express_queue, normal_jobs"',
        "set sched preempt_prio = express_queue\nset sched preempt_prio += normal_jobs")
    runner = Recorded(fixture("print_server_initial.txt"), sched=text)
    assert pbs.ensure_sched(pbs.Qmgr(runner), pbs.pbs_sched_attributes(example_model()))["changed"] is False


def test_qmgr_failure_names_the_command_and_the_error():
    runner = Recorded(fixture("print_server_drifted.txt"),
                      fail={"set queue burst Priority = 1": "qmgr obj=burst svr=default: Unauthorized Request"})
    with pytest.raises(pbs.PbsError, match=r"set queue burst Priority = 1.*Unauthorized Request"):
        pbs.ensure_queue(pbs.Qmgr(runner), "burst", desired("burst"))


def test_server_argument_is_passed_to_qmgr():
    seen = []

    class Spy(pbs.CommandRunner):
        def run(self, argv):
            seen.append(argv)
            return 0, fixture("print_server_converged.txt"), ""

    pbs.ensure_server(pbs.Qmgr(Spy(), "/opt/pbs/bin/qmgr", "pbs-head"), {"scheduling": True})
    assert seen == [["/opt/pbs/bin/qmgr", "-c", "print server", "pbs-head"]]


# --- the site model in PBS terms ---------------------------------------------------------------------


def test_model_to_queues_semantics():
    queues = {q["name"]: q["attributes"] for q in pbs.pbs_queues(example_model())}
    assert list(queues) == ["burst", "prod", "bigmem"]  # burst first: production queues name it in preempt_targets
    for name in ("prod", "bigmem"):
        assert queues[name]["Priority"] >= pbs.PREEMPT_QUEUE_PRIO  # express queue: preempts normal jobs
        assert queues[name]["resources_default.preempt_targets"] == "queue=burst"  # ... but only burst jobs
    burst = queues["burst"]
    assert burst["Priority"] < pbs.PREEMPT_QUEUE_PRIO
    assert burst["resources_default.preempt_targets"] == "NONE"
    assert burst["max_run_res.ncpus"] == ["[o:PBS_ALL=256]", "[u:PBS_GENERIC=64]"]  # 25% of 1024 cores; per user
    assert burst["max_run"] == ["[u:PBS_GENERIC=64]"] and burst["max_queued"] == ["[u:PBS_GENERIC=500]"]
    assert burst["resources_max.walltime"] == "04:00:00" and burst["kill_delay"] == 120
    assert burst["acl_groups"] == ["datasci"] and burst["acl_group_enable"] is True
    assert pbs.pbs_server_attributes(example_model()) == {"default_queue": "prod", "scheduling": True}
    assert pbs.pbs_sched_attributes(example_model())["preempt_order"] == "RD"


def test_model_that_pbs_cannot_express_is_refused():
    site = yaml.safe_load((REPO / "inventories/example-pbs/group_vars/all/site.yml").read_text())["daskhpc_site"]
    site["partitions"][0]["name"] = "production_longjobs"
    site["partitions"][1]["priority_tier"] = 900
    site["partitions"][2]["priority_tier"] = 1
    with pytest.raises(pbs.PbsError) as err:
        pbs.pbs_queues(site_model.validate(site))
    text = str(err.value)
    assert "'production_longjobs' is not a valid PBS queue name" in text
    assert "partitions.bigmem.priority_tier: 900 gives queue Priority 1050" in text


def test_bad_preempt_order_from_role_variable():
    with pytest.raises(pbs.PbsError, match="not a preempt_order"):
        pbs.pbs_sched_attributes(example_model(), preempt_order="requeue")


def test_filter_refuses_a_slurm_site():
    from ansible.errors import AnsibleFilterError

    from ansible_collections.onprem.daskhpc.plugins.filter.pbs import FilterModule

    lab = yaml.safe_load((REPO / "inventories/lab/group_vars/all/site.yml").read_text())["daskhpc_site"]
    with pytest.raises(AnsibleFilterError, match="not pbs"):
        FilterModule().filters()["pbs_queues"](lab)
    site = yaml.safe_load((REPO / "inventories/example-pbs/group_vars/all/site.yml").read_text())["daskhpc_site"]
    assert [q["name"] for q in FilterModule().filters()["pbs_queues"](site)] == ["burst", "prod", "bigmem"]


def test_pbs_lab_model_gives_its_moms_and_queues():
    """inventories/lab-pbs: the nodes pbs_daemons registers, and a per-user cap below the burst share."""
    from ansible_collections.onprem.daskhpc.plugins.filter.pbs import FilterModule

    site = yaml.safe_load((REPO / "inventories/lab-pbs/group_vars/all/site.yml").read_text())["daskhpc_site"]
    filters = FilterModule().filters()
    assert filters["pbs_nodes"](site) == [{"name": "pcn1", "ncpus": 8, "mem": "16000mb"},
                                          {"name": "pcn2", "ncpus": 8, "mem": "16000mb"}]
    burst = next(q for q in filters["pbs_queues"](site) if q["name"] == "burst")["attributes"]
    assert burst["max_run_res.ncpus"] == ["[o:PBS_ALL=8]", "[u:PBS_GENERIC=4]"]
