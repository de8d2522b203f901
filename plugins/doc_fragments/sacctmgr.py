# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every module that manages one sacctmgr record (QOS, account, user, cluster) takes."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  name:
    description: Name of the record (for a cluster, its C(ClusterName) in slurm.conf).
    type: str
    required: true
  state:
    description: Whether the record should exist in SLURM's accounting database.
    type: str
    choices: [present, absent]
    default: present
  sacctmgr_path:
    description: Path to sacctmgr.
    type: str
    default: sacctmgr
"""
