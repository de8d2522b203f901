"""Every module accepts exactly the options it documents: its DOCUMENTATION merged with the doc
fragments it extends (a module's own entry wins, as in ansible-doc) against the argument_spec its
main() builds, option by option: type, required, default, choices, elements and suboptions.

ansible-test sanity's validate-modules checks the same on the copy it builds; this runs with the unit
tests, so a fragment and its argspec builder (module_utils/argspec.py) cannot drift apart unnoticed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

COLLECTION = "ansible_collections.onprem.daskhpc.plugins"
MODULES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "plugins" / "modules").glob("*.py")
                 if p.stem != "__init__")


class Captured(Exception):
    def __init__(self, argument_spec):
        super().__init__()
        self.argument_spec = argument_spec


class CapturingModule:
    """Stands in for AnsibleModule: keeps the argument_spec main() passes and stops main() there."""

    def __init__(self, argument_spec, **_kwargs):
        raise Captured(argument_spec)


def argument_spec(name, monkeypatch):
    module = importlib.import_module("%s.modules.%s" % (COLLECTION, name))
    monkeypatch.setattr(module, "AnsibleModule", CapturingModule)
    with pytest.raises(Captured) as captured:
        module.main()
    return captured.value.argument_spec


def documented_options(name):
    module = importlib.import_module("%s.modules.%s" % (COLLECTION, name))
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = {}
    for fragment in doc.get("extends_documentation_fragment") or []:
        fragment_module = importlib.import_module("%s.doc_fragments.%s" % (COLLECTION, fragment.split(".")[-1]))
        options.update(yaml.safe_load(fragment_module.ModuleDocFragment.DOCUMENTATION).get("options") or {})
    options.update(doc.get("options") or {})
    return options


def differences(documented, accepted, path=""):
    """What the documentation says otherwise than the argument_spec, one line each."""
    found = []
    for key in sorted(set(documented) ^ set(accepted)):
        found.append("%s%s: %s" % (path, key, "documented only" if key in documented else "accepted only"))
    for key in sorted(set(documented) & set(accepted)):
        doc, spec = documented[key] or {}, accepted[key]
        pairs = {
            "type": (doc.get("type", "str"), spec.get("type", "str")),
            "required": (doc.get("required", False), spec.get("required", False)),
            "default": (doc.get("default"), spec.get("default")),
            "choices": (doc.get("choices"), list(spec["choices"]) if spec.get("choices") is not None else None),
            "elements": (doc.get("elements"), spec.get("elements")),
        }
        found += ["%s%s.%s: documented %r, accepted %r" % (path, key, what, said, taken)
                  for what, (said, taken) in pairs.items() if said != taken]
        if doc.get("suboptions") or spec.get("options"):
            found += differences(doc.get("suboptions") or {}, spec.get("options") or {}, "%s%s." % (path, key))
    return found


def test_every_module_is_checked():
    assert len(MODULES) >= 17


@pytest.mark.parametrize("name", MODULES)
def test_documented_options_are_the_accepted_ones(name, monkeypatch):
    assert differences(documented_options(name), argument_spec(name, monkeypatch)) == []


def test_a_drift_is_named():
    documented = {"name": {"type": "str", "required": True}, "old": {}}
    accepted = {"name": {"type": "str"}, "new": {"type": "int"}}
    assert differences(documented, accepted) == ["new: accepted only", "old: documented only",
                                                 "name.required: documented True, accepted False"]
