"""The site model's invariants, each with a good and a bad example."""

from __future__ import annotations

import copy

import pytest

from daskhpc.core import site_model as sm


def errors_of(site):
    with pytest.raises(sm.SiteModelError) as info:
        sm.validate(site)
    return info.value.errors


def part(site, name):
    return next(p for p in site["partitions"] if p["name"] == name)


def test_lab_model_is_valid_and_derives_the_burst_cap(site):
    model = sm.validate(site)
    assert model["total_cores"] == 32  # cn1, cn2, bm1, bm2: 8 cores each
    assert model["burst"]["max_cores"] == 16  # 50%
    assert model["burst_partitions"] == ["burst"]
    assert model["production_partitions"] == ["prod", "bigmem"]
    assert part(model, "burst")["nodes"] == ["cn1", "cn2", "bm1", "bm2"]


@pytest.mark.parametrize("path", ["inventories/example-site/group_vars/all/site.yml"])
def test_shipped_example_models_are_valid(load_site, path):
    assert sm.validate(load_site(path))["partitions"]


def test_validation_does_not_change_its_input(site):
    before = copy.deepcopy(site)
    sm.validate(site)
    assert site == before


def test_a_production_partition_is_required(site):
    site["partitions"] = [p for p in site["partitions"] if p["class"] == "burst"]
    assert any("there is no production partition" in e for e in errors_of(site))


def test_burst_tier_must_be_below_every_production_partition_it_shares_nodes_with(site):
    part(site, "burst")["priority_tier"] = 10
    errs = errors_of(site)
    assert any(e.startswith("partitions.burst.priority_tier") and "prod" in e for e in errs)
    assert any("bigmem" in e for e in errs)


def test_burst_tier_may_equal_a_production_tier_when_no_nodes_are_shared(site):
    part(site, "burst")["node_groups"] = ["compute"]
    part(site, "burst")["priority_tier"] = 5
    part(site, "bigmem")["priority_tier"] = 5
    sm.validate(site)


def test_production_partitions_are_never_preemptable(site):
    model = sm.validate(site)
    lines = {p["PartitionName"]: p for p in sm.slurm_partitions(model)}
    assert lines["prod"]["PreemptMode"] == "OFF"
    assert lines["bigmem"]["PreemptMode"] == "OFF"
    assert lines["burst"]["PreemptMode"] == "REQUEUE"
    assert lines["burst"]["PriorityTier"] < lines["prod"]["PriorityTier"]


@pytest.mark.parametrize("share", [0, -5, 101, "half", True])
def test_burst_share_must_be_in_zero_to_hundred(site, share):
    site["burst"]["max_share_percent"] = share
    assert any(e.startswith("burst.max_share_percent") for e in errors_of(site))


def test_whole_cluster_share_is_allowed(site):
    site["burst"]["max_share_percent"] = 100
    assert sm.validate(site)["burst"]["max_cores"] == 32


def test_share_smaller_than_one_core_is_refused(site):
    site["burst"]["max_share_percent"] = 1
    site["burst"]["per_user"]["max_cores"] = 1
    assert any("less than one core" in e for e in errors_of(site))


def test_unknown_node_group_is_named_with_the_choices(site):
    part(site, "prod")["node_groups"] = ["gpu"]
    errs = errors_of(site)
    assert any("node group 'gpu' does not exist" in e and "compute" in e for e in errs)


def test_undeclared_group_is_refused(site):
    part(site, "prod")["allow_groups"].append("finance")
    assert any("group 'finance' is not declared" in e for e in errors_of(site))


@pytest.mark.parametrize("name", ["Prod", "1prod", "pr od", "", "x" * 40, None])
def test_names_must_be_valid(site, name):
    part(site, "prod")["name"] = name
    assert any(e.startswith("partitions[0].name") for e in errors_of(site))


def test_names_must_be_unique(site):
    part(site, "bigmem")["name"] = "prod"
    assert any("'prod' is used twice" in e for e in errors_of(site))


def test_a_node_belongs_to_one_node_group(site):
    site["node_groups"][1]["nodes"] = "cn[2-3]"
    assert any("node cn2 is already in node group compute" in e for e in errors_of(site))


def test_emulated_node_ports_must_not_overlap(site):
    # Emulated nodes (several slurmd on one host): each group's nodes take ports from `port` on.
    for group, port in zip(site["node_groups"], (17001, 17002)):
        group.update(hostname="localhost", port=port)
    assert any("port 17002" in e for e in errors_of(site))


def test_unknown_fields_are_reported_with_the_allowed_ones(site):
    site["burst"]["grace"] = 10
    errs = errors_of(site)
    assert any(e.startswith("burst.grace: unknown field") and "grace_time" in e for e in errs)


def test_burst_partition_cannot_be_default(site):
    part(site, "prod")["default"] = False
    part(site, "burst")["default"] = True
    assert any("burst partition cannot be the default" in e for e in errors_of(site))


def test_per_user_cap_cannot_exceed_the_burst_cap(site):
    site["burst"]["per_user"]["max_cores"] = 30
    assert any(e.startswith("burst.per_user.max_cores") for e in errors_of(site))


def test_every_problem_is_reported_at_once(site):
    site["scheduler"] = "lsf"
    site["burst"]["max_share_percent"] = 0
    part(site, "prod")["class"] = "fast"
    errs = errors_of(site)
    fields = {e.split(":")[0] for e in errs}
    assert {"scheduler", "burst.max_share_percent", "partitions[0].class"} <= fields
    assert all("Fix:" in e for e in errs)


def test_burst_qos_carries_the_policy(site):
    qos = sm.burst_qos(sm.validate(site))
    assert qos == {
        "name": "burst",
        "description": "daskhpc burst policy for lab",
        "MaxTRESPerUser": "cpu=16",
        "MaxJobsPerUser": 32,
        "MaxSubmitJobsPerUser": 200,
        "GrpTRES": "cpu=16",
        "MaxWall": "04:00:00",
        "Flags": "DenyOnLimit",
    }


@pytest.mark.parametrize(
    ("expr", "hosts"),
    [
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("gpu[08-10],login1", ["gpu08", "gpu09", "gpu10", "login1"]),
        ("a[1,3-4]", ["a1", "a3", "a4"]),
    ],
)
def test_hostlists(expr, hosts):
    assert sm.expand_hostlist(expr) == hosts


@pytest.mark.parametrize("expr", ["n[3-1]", "n[a-b]", "n[1-2"])
def test_bad_hostlists(expr):
    with pytest.raises(ValueError):
        sm.expand_hostlist(expr)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), ("04:00:00", 240), ("1-00:00:00", 1440), ("2-12", 3600), ("UNLIMITED", None), ("10:30", 10.5)],
)
def test_durations(text, minutes):
    assert sm.parse_duration_minutes(text) == minutes


def test_durations_round_trip():
    for minutes in (1, 59, 240, 1440, 4321):
        assert sm.parse_duration_minutes(sm.format_slurm_minutes(minutes)) == minutes
