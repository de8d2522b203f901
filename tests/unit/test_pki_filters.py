"""Unit tests of the PKI filters (plugins/filter/pki.py) and of the Dask peer check (daskhpc.security)."""

from __future__ import annotations

import ssl

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.daskhpc.plugins.filter import pki as filters
from daskhpc import security

LAB_SITE = "inventories/lab/group_vars/all/site.yml"


def lab_site():
    from pathlib import Path

    with open(Path(__file__).resolve().parents[2] / LAB_SITE) as handle:
        return yaml.safe_load(handle)["daskhpc_site"]


def test_ca_settings_and_burst_groups_from_the_model():
    site = lab_site()
    assert filters.pki_ca(site) == {"name": "daskhpc lab CA", "dir": "/etc/daskhpc/ca", "key_type": "ecdsa-p256",
                                    "host_cert_days": 90, "user_cert_days": 7, "renew_before_days": 2}
    assert filters.pki_burst_groups(site) == ["datasci"]


def test_bad_model_is_a_filter_error():
    site = lab_site()
    site["ca"]["renew_before_days"] = 9
    with pytest.raises(AnsibleFilterError, match="ca.renew_before_days"):
        filters.pki_ca(site)


def test_user_requests_from_getent_results():
    results = [
        {"item": "alice", "ansible_facts": {"getent_passwd": {"alice": ["x", "10001", "100", "Alice", "/home/alice",
                                                                        "/bin/bash"]}}},
        {"item": "ghost", "ansible_facts": {"getent_passwd": {"ghost": None}}},
    ]
    assert filters.pki_user_requests(results) == [{
        "path": "/home/alice/.daskhpc/tls/user.pem", "privatekey_path": "/home/alice/.daskhpc/tls/user.key",
        "subject": {"CN": "alice"}, "owner": "10001", "group": "100", "home": "/home/alice"}]
    assert filters.pki_missing_users(results) == ["ghost"]


def test_staging_requests_add_service_sans_to_host_sans():
    items = filters.pki_staging_requests(
        [{"name": "host", "profile": "host"}, {"name": "slapd", "subject_alt_names": ["127.0.0.1", "node1"]}],
        "/ca/issued/node1", ["node1", "node1.example.org"])
    assert items[1] == {"path": "/ca/issued/node1/slapd.pem", "privatekey_path": "/ca/issued/node1/slapd.key",
                        "subject": {"CN": "node1"}, "subject_alt_names": ["node1", "node1.example.org", "127.0.0.1"],
                        "profile": "service"}
    assert items[0]["profile"] == "host"
    with pytest.raises(AnsibleFilterError, match="no name"):
        filters.pki_staging_requests([{}], "/x", ["node1"])


def _peer(cn, ou=None):
    subject = [(("commonName", cn),)]
    if ou:
        subject.insert(0, (("organizationalUnitName", ou),))
    return {"subject": tuple(subject)}


def test_peer_check_accepts_only_the_owners_user_certificate():
    security.check_peer(_peer("alice", "users"), "alice")
    for peer in (_peer("bob", "users"), _peer("alice"), _peer("alice", "hosts"), {}):
        with pytest.raises(ssl.SSLCertVerificationError, match="is not the cluster owner alice") as err:
            security.check_peer(peer, "alice")
        assert err.value.reason == "PEER_NOT_CLUSTER_OWNER"  # distributed reads .reason on SSL errors


def test_bind_context_is_idempotent_and_refuses_rebinding():
    ctx = ssl.create_default_context()
    security.bind_context(ctx, "alice")
    security.bind_context(ctx, "alice")
    assert ctx.sslsocket_class.daskhpc_owner == "alice"
    with pytest.raises(ValueError, match="already bound to alice"):
        security.bind_context(ctx, "bob")
