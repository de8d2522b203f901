"""Fixtures the unit tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAB_SITE = "inventories/lab/group_vars/all/site.yml"


def read_site(path):
    with open(REPO / path) as fh:
        return yaml.safe_load(fh)["daskhpc_site"]


@pytest.fixture
def load_site():
    """The site model of a file in the repository (``daskhpc_site`` of its YAML), read afresh each call."""
    return read_site


@pytest.fixture
def site():
    """The lab's site model, the test's own copy to change."""
    return read_site(LAB_SITE)
