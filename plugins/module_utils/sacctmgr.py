# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sacctmgr with machine-readable output only.

Everything here reads `--parsable2 --noheader` output with an explicit
`format=` list, so no human-readable message is ever matched. The runner is
injected (``timed_runner``: command.run with a timeout, in modules and tools;
recorded answers in tests).

Names are single values: sacctmgr reads ``name=a,b`` as two names and ``a=b``
as another setting, so a record name or a ``where`` value holding a comma,
``=``, whitespace or a leading ``-`` is refused before sacctmgr runs.
"""

from __future__ import annotations

import re

from ._core import command
from ._core.site_model import parse_duration_minutes
from ._core.slurm import parsable2

SACCTMGR = "sacctmgr"
_NOT_SINGLE = re.compile(r"[,=\s]|^-|^$")


class SacctmgrError(RuntimeError):
    pass


def timed_runner(timeout=command.DEFAULT_TIMEOUT):
    """A runner that kills sacctmgr after *timeout* seconds (slurmdbd unreachable must not hang a run)."""
    return lambda argv: command.run(argv, timeout)


def _single(what, value):
    if _NOT_SINGLE.search(str(value)):
        raise SacctmgrError("refusing %s %r: sacctmgr would read a comma, '=', whitespace or a leading '-' as "
                            "more than one value" % (what, value))
    return value


class Sacctmgr:
    """Thin, typed access to sacctmgr: show as dicts, change with --immediate."""

    def __init__(self, run=None, binary=SACCTMGR):
        self._run = run or timed_runner()
        self.binary = binary

    def _call(self, args):
        argv = [self.binary] + list(args)
        rc, out, err = self._run(argv)
        if rc != 0:
            raise SacctmgrError("%s failed (rc=%s): %s" % (" ".join(argv), rc, (err or out).strip()))
        return out

    def show(self, entity, fields, where=None):
        """Rows of `sacctmgr show ENTITY` as dicts keyed by the requested field names."""
        args = ["--parsable2", "--noheader", "show", entity]
        for key, value in (where or {}).items():
            args.append("%s=%s" % (key, _single(key, value)))
        args.append("format=%s" % ",".join(fields))
        return parsable2(self._call(args), fields)

    def add(self, entity, name, settings=None):
        args = ["--immediate", "add", entity, _single(entity + " name", name)]
        args += ["%s=%s" % (k, v) for k, v in (settings or {}).items()]
        return self._call(args)

    def modify(self, entity, where, settings):
        args = ["--immediate", "modify", entity, "where"]
        args += ["%s=%s" % (k, _single(k, v)) for k, v in where.items()]
        args.append("set")
        args += ["%s=%s" % (k, v) for k, v in settings.items()]
        return self._call(args)

    def delete(self, entity, where):
        args = ["--immediate", "delete", entity, "where"]
        args += ["%s=%s" % (k, _single(k, v)) for k, v in where.items()]
        return self._call(args)


# --- normalisation: make "what sacctmgr prints" comparable with "what we want" --


def norm_tres(value):
    """`cpu=4,mem=1G` in a stable order; empty for unset."""
    if value in (None, "", -1, "-1"):
        return ""
    parts = [p for p in str(value).split(",") if p]
    return ",".join(sorted(parts))


def norm_int(value):
    if value in (None, "", -1, "-1"):
        return ""
    return str(int(value))


def norm_list(value):
    if value in (None, "", -1, "-1"):
        return ""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return ",".join(sorted(str(i).strip() for i in items if str(i).strip()))


def norm_text(value):
    return "" if value is None else str(value).strip()


def norm_folded(value):
    """sacctmgr stores account descriptions and organisations in lower case."""
    return norm_text(value).lower()


def norm_duration(value):
    """MaxWall as minutes; sacctmgr prints [D-]HH:MM:SS, the model may say the same or UNLIMITED."""
    if value in (None, "", -1, "-1"):
        return ""
    minutes = parse_duration_minutes(value)
    return "" if minutes is None else str(minutes)


def diff_settings(fields, current, wanted):
    """The settings to change: {sacctmgr_set_key: wanted_value} where the normalised values differ.

    `fields` maps an option name to (sacctmgr set key, format key, normaliser).
    Options whose wanted value is None are not managed.
    """
    changes = {}
    for option, (set_key, format_key, norm) in fields.items():
        want = wanted.get(option)
        if want is None:
            continue
        have = current.get(format_key, "") if current else ""
        if norm(want) != norm(have):
            changes[set_key] = _render(want)
    return changes


def _render(value):
    # Arguments go to sacctmgr as argv, never through a shell: no quoting.
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else "-1"
    return "-1" if value == "" else str(value)


def state_view(fields, row):
    """A row keyed by option names, for diff output."""
    if row is None:
        return {}
    return {option: row.get(format_key, "") for option, (_set_key, format_key, _normalise) in fields.items()}
