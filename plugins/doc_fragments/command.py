# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option every module that runs a batch-system command (sacctmgr, qmgr) takes."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  command_timeout:
    description:
      - Seconds each sacctmgr or qmgr command may take. At the timeout the command and its children are
        killed and the task fails naming the command, so a hung slurmdbd or PBS server cannot hang the run.
    type: int
    default: 60
"""
