"""The typed model, its views, the inventory cross-check and the defaults that must agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.filter import dask_client as client_filters
from ansible_collections.onprem.daskhpc.plugins.filter import ldap as ldap_filters
from ansible_collections.onprem.daskhpc.plugins.filter import pki as pki_filters
from ansible_collections.onprem.daskhpc.plugins.filter import site as site_filters
from daskhpc.exporter import server as exporter
from daskhpc.core import site_model as sm

REPO = Path(__file__).resolve().parents[2]


def inventory_hosts(inventory, group):
    """The hosts of `group` as Ansible reads the inventory."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    manager = InventoryManager(loader=DataLoader(), sources=[str(REPO / inventory / "hosts.yml")])
    return sorted(host.name for host in manager.groups[group].get_hosts())


# --- the typed model ----------------------------------------------------------------------------------


def test_the_model_is_frozen_and_keeps_what_was_written_apart_from_what_is_derived(site):
    model = sm.validate(site)
    assert isinstance(model.site, sm.Site) and isinstance(model.derived, sm.Derived)
    assert model.site.partitions[2] == sm.Partition(name="burst", kind="burst", node_groups=("compute", "bigmem"),
                                                    allow_groups=("datasci",), default=False, max_time="04:00:00",
                                                    priority_tier=1)
    assert model.site.burst.per_user.max_cores == 16
    assert model.derived.partition_nodes[2] == ("cn1", "cn2", "bm1", "bm2")
    assert model.derived.burst_max_cores == 16
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.site.burst.qos = "other"


def test_the_plain_form_is_a_copy_and_the_mapping_view_matches_it(site):
    model = sm.validate(site)
    plain = model.as_dict()
    plain["burst"]["qos"] = "changed"
    assert model["burst"]["qos"] == "burst"
    assert dict(model) == model.as_dict()


def test_the_section_classes_have_exactly_the_fields_of_the_default_tables():
    for name, kind in sm.SECTION_CLASSES.items():
        assert {f.name for f in dataclasses.fields(kind)} == set(sm.SECTION_DEFAULTS[name]), name
    assert {f.name for f in dataclasses.fields(sm.PerUser)} == set(sm.BURST_DEFAULTS["per_user"])


def test_lenient_mode_returns_the_model_and_no_errors_for_a_good_site(site):
    model, errors = sm.validate(site, lenient=True)
    assert errors == [] and model.valid
    assert model == sm.validate(site)


def test_lenient_mode_keeps_what_was_written_of_a_bad_site(site):
    site["partitions"][2]["priority_tier"] = 99  # burst above production: invalid
    site["burst"]["grace_time"] = "soon"  # wrong type: falls back to its default
    model, errors = sm.validate(site, lenient=True)
    assert not model.valid and any(e.startswith("partitions.burst.priority_tier") for e in errors)
    assert model["partitions"][2]["priority_tier"] == 99
    assert model["partitions"][2]["nodes"] == ["cn1", "cn2", "bm1", "bm2"]
    assert model["burst"]["grace_time"] == sm.BURST_DEFAULTS["grace_time"]


@pytest.mark.parametrize("document", [None, [], "text", 5, {"partitions": "x", "node_groups": [1, {"name": 2}]}])
def test_lenient_mode_never_raises(document):
    model, errors = sm.validate(document, lenient=True)
    assert errors and not model.valid
    assert model["partitions"] == [] or isinstance(model["partitions"], list)


# --- views -------------------------------------------------------------------------------------------------


def test_qos_arguments_are_in_the_modules_own_vocabulary(site):
    args = sm.qos_args(sm.validate(site))
    assert args == {"name": "burst", "description": "daskhpc burst policy for lab", "max_tres_per_user": "cpu=16",
                    "max_jobs_per_user": 32, "max_submit_jobs_per_user": 200, "grp_tres": "cpu=16",
                    "max_wall": "04:00:00", "flags": ["DenyOnLimit"]}
    from ansible_collections.onprem.daskhpc.plugins.module_utils.slurm_accounting import QOS_FIELDS
    assert set(args) - {"name"} <= set(QOS_FIELDS)
    assert {QOS_FIELDS[k][0] for k in sm.QOS_SACCTMGR_NAMES} == set(sm.QOS_SACCTMGR_NAMES.values())


def test_who_may_burst_has_one_answer_for_every_consumer(site):
    site["groups"].append({"name": "analysts"})
    site["partitions"][2]["allow_groups"] = ["datasci", "analysts"]
    model = sm.validate(site)
    assert sm.burst_groups(model) == ["analysts", "datasci"]
    published = model.as_dict()
    assert ldap_filters.ldap_burst_groups(published) == sm.burst_groups(model)
    assert pki_filters.pki_burst_groups(published) == sm.burst_groups(model)
    assert sm.client_config(model)["allowed-groups"] == sm.burst_groups(model)


def test_the_client_configuration_carries_the_job_limits_of_the_largest_burst_node(site):
    limits = sm.client_config(sm.validate(site))["limits"]
    assert limits["max-cores-per-job"] == 8
    assert limits["max-memory-per-job"] == "32000MiB"


def test_filters_take_the_published_model_without_validating_again(site, monkeypatch):
    published = sm.validate(site).as_dict()

    def refuse(*args, **kwargs):
        raise AssertionError("validated again")

    monkeypatch.setattr(sm, "validate", refuse)
    assert site_filters.slurm_qos_args(published)["name"] == "burst"
    assert client_filters.dask_client_venv(published) == "/opt/daskhpc/venv"
    account = {"name": "burst", "cluster": "lab", "qos": ["burst"], "default_qos": "burst"}
    assert site_filters.slurm_burst_account_args(published) == account


def test_a_raw_bad_site_given_to_a_filter_is_refused_with_the_field(site):
    site["burst"]["qos"] = "normal"
    with pytest.raises(AnsibleFilterError, match="burst.qos"):
        site_filters.slurm_partitions(site)


# --- defaults elsewhere agree with the model's tables ---------------------------------------------------------


def minimal_site():
    return {"name": "mini", "scheduler": "slurm",
            "node_groups": [{"name": "compute", "nodes": "n[1-4]", "cpus": 64, "memory_mb": 256000}],
            "groups": [{"name": "datasci"}],
            "partitions": [{"name": "prod", "class": "production", "node_groups": ["compute"]},
                           {"name": "burst", "class": "burst", "node_groups": ["compute"],
                            "allow_groups": ["datasci"]}]}


def test_the_packages_client_defaults_are_the_models_defaults():
    with open(REPO / "daskhpc" / "daskhpc.yaml") as fh:
        package = yaml.safe_load(fh)["daskhpc"]
    model = sm.client_config(sm.validate(minimal_site()))
    for key in ("python", "max-walltime", "grace-time", "tls", "metrics-targets-dir", "interface", "worker-cores",
                "worker-memory"):
        want = model[key]
        have = package[key]["mode"] if key == "tls" else package[key]
        assert have == want, key
    for key in ("max-cores-per-user", "max-jobs-per-user"):
        assert package["limits"][key] == model["limits"][key], key


def test_the_exporters_defaults_are_the_models_defaults():
    config = sm.exporter_config(sm.validate(minimal_site()))
    assert set(config) <= set(exporter.DEFAULTS)
    assert exporter.DEFAULTS["listen_port"] == config["listen_port"] == sm.METRICS_DEFAULTS["exporter_port"]
    assert exporter.DEFAULTS["slurm_bin_dir"] == config["slurm_bin_dir"]


# --- inventory and model agree ----------------------------------------------------------------------------------


@pytest.mark.parametrize("inventory", ["inventories/lab", "inventories/example-site", "inventories/example-pbs"])
def test_the_shipped_inventories_and_their_models_agree(load_site, inventory):
    model = sm.validate(load_site(inventory + "/group_vars/all/site.yml"))
    hosts = inventory_hosts(inventory, "compute")
    assert hosts, "no compute hosts in %s" % inventory
    assert sm.inventory_problems(model, hosts) == []


def test_a_node_without_a_host_and_a_host_without_a_node_are_named_with_their_fix(site):
    model = sm.validate(site)
    problems = sm.inventory_problems(model, ["cn1.lab", "cn2", "bm1", "gpu9"])
    assert problems == [
        "node_groups[1].nodes: node bm2 has no host in the inventory group compute. Fix: add bm2 (or its FQDN) to "
        "the inventory group compute, or remove it from node_groups[1].nodes",
        "inventory group compute: host gpu9 is no node of any node group. Fix: add it to a node group's nodes in "
        "daskhpc_site, or take it out of the group compute",
    ]


def test_emulated_nodes_need_only_their_host(site):
    site["node_groups"][0].update(hostname="ctl", port=17001)
    site["node_groups"][1].update(hostname="ctl", port=17003)
    assert sm.inventory_problems(sm.validate(site), ["ctl"]) == []


def test_the_published_model_holds_every_section_field():
    """daskhpc_model (as_dict) is what the roles read: a field dropped from a section class silently
    breaks them (dask.packages did, in a merge)."""
    model = sm.validate(minimal_site())
    for section, defaults in sm.SECTION_DEFAULTS.items():
        assert set(defaults) <= set(model[section]), section
    assert model["dask"]["packages"] == sm.DASK_DEFAULTS["packages"]
    assert model["jupyterhub"] == {"enabled": False, "port": 8443, "packages": sm.JUPYTERHUB_DEFAULTS["packages"]}
