# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options the doc fragments document, as argument specs: one function per fragment in
plugins/doc_fragments/, named after it (the pairs community.crypto keeps). A module that extends
``onprem.daskhpc.<fragment>`` builds its argument_spec from ``<fragment>_argument_spec()``, so what is
documented once is accepted from one place; tests/unit/test_module_docs.py holds every module to that."""

from __future__ import annotations

from ._core.command import DEFAULT_TIMEOUT


def command_argument_spec():
    """doc_fragments/command.py"""
    return {"command_timeout": {"type": "int", "default": DEFAULT_TIMEOUT}}


def sacctmgr_argument_spec():
    """doc_fragments/sacctmgr.py"""
    return {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "sacctmgr_path": {"type": "str", "default": "sacctmgr"},
    }


def qmgr_argument_spec():
    """doc_fragments/qmgr.py"""
    return {
        "qmgr_path": {"type": "str", "default": "qmgr"},
        "server": {"type": "str"},
    }


def ldap_argument_spec():
    """doc_fragments/ldap.py"""
    return {
        "server_uri": {"type": "str", "required": True},
        "start_tls": {"type": "bool", "default": True},
        "ca_file": {"type": "path", "default": "/etc/daskhpc/tls/ca.pem"},
        "bind_dn": {"type": "str"},
        "bind_pw": {"type": "str", "no_log": True},
        "timeout": {"type": "int", "default": 5},
    }


def pki_argument_spec():
    """doc_fragments/pki.py"""
    return {
        "ca_dir": {"type": "path", "required": True},
        "ca_passphrase": {"type": "str", "required": True, "no_log": True},
        "requested_by": {"type": "str"},
    }
