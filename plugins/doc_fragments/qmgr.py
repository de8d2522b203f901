# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every module that changes OpenPBS through qmgr takes."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  qmgr_path:
    description: Path to qmgr (C(/opt/pbs/bin/qmgr) on a default install).
    type: str
    default: qmgr
  server:
    description: PBS server to manage; the default server when unset.
    type: str
"""
