# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SLURM's machine-readable output, read the same way by the modules (sacctmgr) and the ``daskhpc``
package (as ``daskhpc.core.slurm``: the audit, through ``daskhpc.scheduler.slurm``).

Pure Python, standard library only.
"""

from __future__ import annotations


def parsable2(text, fields):
    """Rows of ``--parsable2 --noheader`` output as dicts keyed by the ``format=`` field names.

    *fields* is the format list as given to the command (``"User,Account"`` or a sequence); a row with
    fewer values than fields (an older SLURM without a field) reads the missing ones as empty.
    """
    names = fields.split(",") if isinstance(fields, str) else list(fields)
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        rows.append(dict(zip(names, values + [""] * (len(names) - len(values)))))
    return rows
