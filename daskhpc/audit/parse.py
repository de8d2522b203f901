# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsers for the schedulers' machine-readable output (raw text in, dicts out)."""

from __future__ import annotations

from daskhpc.audit.probe import ASSOC_FIELDS, QOS_FIELDS, SACCT_FIELDS


def parsable2(text, fields):
    """Rows of `--parsable2 --noheader` output as dicts keyed by the format= field names."""
    names = fields.split(",") if isinstance(fields, str) else list(fields)
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        rows.append(dict(zip(names, values + [""] * (len(names) - len(values)))))
    return rows


def scontrol_oneliner(text):
    """`scontrol show partition --oneliner`: one dict per partition, keyed by scontrol's names."""
    parts = []
    for line in text.splitlines():
        fields = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        if "PartitionName" in fields:
            parts.append(fields)
    return parts


def qos_rows(text):
    return parsable2(text, QOS_FIELDS)


def assoc_rows(text):
    return parsable2(text, ASSOC_FIELDS)


def sacct_rows(text):
    return parsable2(text, SACCT_FIELDS)


def split_list(value):
    """A comma-separated scheduler list; empty for the scheduler's 'none' spellings."""
    if value in (None, "", "N/A", "(null)", "ALL"):
        return []
    return sorted(v for v in str(value).split(",") if v)
