# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check-mode changes as one JSON document, for the audit report's drift section."""

from __future__ import annotations

DOCUMENTATION = r"""
name: drift_json
type: stdout
short_description: Print what a (check-mode) run changed, as JSON
description:
  - Prints one JSON document at the end of the run with, per play and task, each host's
    C(changed), C(failed), C(skipped), module name and C(diff) (the same shape as the
    ansible.posix.json callback, which is not part of ansible-core).
  - Meant for C(ANSIBLE_STDOUT_CALLBACK=onprem.daskhpc.drift_json ansible-playbook --check --diff site.yml),
    whose output C(daskhpc audit --drift FILE) reads.
  - Results of tasks with C(no_log) are replaced by a placeholder; diffs are never printed for them.
author: onprem.daskhpc contributors (@onprem)
"""

import json

from ansible.plugins.callback import CallbackBase

HIDDEN = {"prepared": "(hidden: the task has no_log)"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "onprem.daskhpc.drift_json"

    def __init__(self, display=None):
        super().__init__(display)
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        if not self.plays:
            self.plays.append({"play": {"name": ""}, "tasks": []})
        self.plays[-1]["tasks"].append({"task": {"name": task.get_name()}, "hosts": {}})

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def _record(self, result, **status):
        raw = result._result
        hidden = result._task.no_log or raw.get("_ansible_no_log")
        diffs = []
        if hidden:
            diffs = [HIDDEN] if raw.get("changed") else []
        else:
            for item in [raw] + list(raw.get("results") or []):
                diff = item.get("diff") if isinstance(item, dict) else None
                diffs.extend(diff if isinstance(diff, list) else [diff] if diff else [])
        entry = {"action": result._task.action, "changed": bool(raw.get("changed")), "diff": diffs}
        entry.update(status)
        if self.plays and self.plays[-1]["tasks"]:
            self.plays[-1]["tasks"][-1]["hosts"][result._host.get_name()] = entry

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True, msg="" if result._task.no_log else str(result._result.get("msg", "")))

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": summary}, indent=1, sort_keys=True,
                                         default=str))
