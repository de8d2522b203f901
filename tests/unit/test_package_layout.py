"""What the wheel ships: the package and the collection's pure core, under one import name each.

The core's files live in the collection (plugins/module_utils/_core) and the package ships them as
``daskhpc.core``; the Ansible-only module_utils beside the core must not be shipped, and no module of the
package may reach the core through the collection's name (a second import name loads the file twice, so
a process would hold two SiteModelError classes). Read from pyproject.toml the way setuptools reads it:
each listed package ships the .py files of its directory, the one in package-dir or its own path.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "plugins" / "module_utils" / "_core"

if sys.version_info < (3, 11):
    pytest.skip("tomllib is Python 3.11+", allow_module_level=True)
import tomllib


def shipped_directories():
    """package name -> the directory setuptools ships it from."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = tool.get("package-dir", {})
    return {name: REPO / mapped.get(name, name.replace(".", "/")) for name in tool["packages"]}


def test_the_core_is_shipped_as_daskhpc_core_and_the_ansible_glue_is_not():
    directories = shipped_directories()
    assert directories["daskhpc.core"] == CORE
    shipped = {path.resolve() for directory in directories.values() for path in directory.glob("*.py")}
    glue = {path.resolve() for path in (REPO / "plugins" / "module_utils").glob("*.py")}
    assert glue, "the Ansible-only module_utils moved: update this test"
    assert not shipped & glue
    assert not [d for d in directories.values() if (REPO / "plugins") in d.parents and d != CORE]


def test_every_subpackage_of_daskhpc_is_shipped():
    directories = shipped_directories()
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "daskhpc").rglob("__init__.py")}
    assert found <= set(directories), "add to [tool.setuptools] packages: %s" % sorted(found - set(directories))


def test_the_package_imports_the_core_under_one_name_only():
    collection_name = re.compile(r"ansible_collections|plugins\.module_utils|daskhpc\.model\b")
    for path in (REPO / "daskhpc").rglob("*.py"):
        assert not collection_name.search(path.read_text()), path
    for path in CORE.glob("*.py"):  # the core imports its siblings relatively: under either name, one file
        imports = re.findall(r"^\s*(?:from|import) (\S+)", path.read_text(), flags=re.M)
        assert not [name for name in imports if name.startswith(("ansible", "daskhpc"))], path


def test_site_model_error_is_one_class_across_the_package():
    from daskhpc import audit
    from daskhpc.core import site_model

    assert audit.SiteModelError is site_model.SiteModelError
    assert site_model.__name__ == "daskhpc.core.site_model"
