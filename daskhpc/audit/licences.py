# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Licences of the packages in the production Python environments, judged against a deny list."""

from __future__ import annotations

import fnmatch
import re

# The usual corporate deny list: strong copyleft. LGPL is not matched by "GPL*".
DEFAULT_DENY = ("GPL*", "AGPL*")
# The site's own tooling is GPL-3.0-or-later and is there on purpose.
DEFAULT_EXEMPT = ("daskhpc",)

# Trove classifiers to SPDX-like identifiers (most specific first).
_CLASSIFIERS = [
    ("GNU Affero General Public License v3 or later", "AGPL-3.0-or-later"),
    ("GNU Affero General Public License v3", "AGPL-3.0"),
    ("GNU Lesser General Public License v3 or later", "LGPL-3.0-or-later"),
    ("GNU Lesser General Public License v3", "LGPL-3.0"),
    ("GNU Lesser General Public License v2 or later", "LGPL-2.0-or-later"),
    ("GNU Lesser General Public License v2", "LGPL-2.0"),
    ("GNU Library or Lesser General Public License", "LGPL"),
    ("GNU General Public License v3 or later", "GPL-3.0-or-later"),
    ("GNU General Public License v3", "GPL-3.0"),
    ("GNU General Public License v2 or later", "GPL-2.0-or-later"),
    ("GNU General Public License v2", "GPL-2.0"),
    ("GNU General Public License", "GPL"),
    ("MIT License", "MIT"),
    ("BSD License", "BSD"),
    ("Apache Software License", "Apache-2.0"),
    ("Mozilla Public License 2.0", "MPL-2.0"),
    ("Python Software Foundation License", "PSF-2.0"),
    ("ISC License", "ISC"),
]


def licence_of(meta):
    """The package's licence as one expression: License-Expression, else classifiers, else License."""
    if meta.get("license_expression"):
        return meta["license_expression"].strip()
    ids = []
    for classifier in meta.get("classifiers") or []:
        for needle, spdx in _CLASSIFIERS:
            if needle in classifier:
                ids.append(spdx)
                break
    if ids:
        return " OR ".join(sorted(set(ids)))
    text = (meta.get("license") or "").strip().splitlines()
    return text[0][:80] if text else "UNKNOWN"


def _alternatives(expression):
    """`A OR (B AND C)` -> [["A"], ["B", "C"]]; a licence is acceptable if any alternative is."""
    cleaned = expression.replace("(", " ").replace(")", " ")
    return [[t for t in re.split(r"\s+AND\s+|\s+WITH\s+", alt.strip()) if t]
            for alt in re.split(r"\s+OR\s+|\s*/\s*|\s*,\s*", cleaned) if alt.strip()]


def denied(expression, deny=DEFAULT_DENY):
    """The deny pattern that hits, if every alternative of the expression contains a denied identifier."""
    hits = []
    for alternative in _alternatives(expression):
        hit = next((p for ident in alternative for p in deny if fnmatch.fnmatchcase(ident.strip(), p)), None)
        if hit is None:
            return ""
        hits.append(hit)
    return hits[0] if hits else ""
