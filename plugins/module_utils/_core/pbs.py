# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenPBS configuration through qmgr: read, validate, compare, and the commands for the differences.

Pure Python (no Ansible imports): the modules, the filter plugin, the ``daskhpc`` package
(as ``daskhpc.core.pbs``) and the tests share it.

Formats, as OpenPBS writes them (src/cmds/qmgr.c ``display()``, src/cmds/qstat.c ``prt_attr()``,
src/lib/Libattr/attr_fn_entlim.c ``encode_entlim()``, src/lib/Libutil/pbs_json.c):

* ``qmgr -c 'print server'`` prints qmgr input: ``create resource R`` / ``set resource R type = long``,
  ``create queue Q`` / ``set queue Q attr[.res] = value``, then ``set server attr[.res] = value``.
  Multi-valued attributes (ACLs, lists, entity limits) come one value per line: the first with ``=``,
  the rest with ``+=``. A value holding a space, comma or quote is quoted with ``"`` (``'`` when it holds
  a ``"``). ``qmgr -c 'print sched'`` prints ``create sched default`` and ``set sched attr = value``.
* ``qstat -Qf -F json`` prints ``{"timestamp":..,"pbs_version":..,"pbs_server":..,"Queue":{Q:{..}}}``;
  ``attr.res`` becomes a nested object; values that parse as numbers are JSON numbers. An entity limit
  with several entries is several attributes of the same name, so the JSON object holds the same key
  more than once: :func:`loads_pbs_json` keeps every one.
"""

from __future__ import annotations

import json
import re

from . import command

# --- errors and the command runner ------------------------------------------------------------------


class PbsError(ValueError):
    """Bad input or a failed PBS command; the message names the field and the fix."""


class CommandRunner:
    """Runs a PBS command; ``run(argv) -> (rc, stdout, stderr)``.

    The modules and the package use :class:`SubprocessRunner` (always with a timeout); the tests
    pass recorded outputs.
    """

    def run(self, argv):  # pragma: no cover - interface
        raise NotImplementedError


class SubprocessRunner(CommandRunner):
    """Runs commands with a timeout (module_utils/_core/command.py): what the pbs_* modules and the package use."""

    def __init__(self, timeout=command.DEFAULT_TIMEOUT):
        self.timeout = timeout

    def run(self, argv):
        return command.run(argv, self.timeout)


def module_qmgr(module):
    """The Qmgr a pbs_* module talks to, from its qmgr_path, server and command_timeout options."""
    return Qmgr(SubprocessRunner(module.params["command_timeout"]), module.params["qmgr_path"],
                module.params["server"])


class Qmgr:
    """qmgr through a runner: ``print`` to read, one ``-c`` per change so a failure names its command."""

    def __init__(self, runner, path="qmgr", server=None):
        self.runner = runner
        self.path = path
        self.server = server

    def _argv(self, command):
        argv = [self.path, "-c", command]
        if self.server:
            argv.append(self.server)
        return argv

    def query(self, command):
        rc, out, err = self.runner.run(self._argv(command))
        if rc != 0:
            raise PbsError("qmgr -c '%s' failed (rc=%s): %s. Fix: run it on the PBS server host as a PBS "
                           "manager, with pbs_server running" % (command, rc, (err or out).strip()))
        return out

    def apply(self, commands):
        for line in commands:
            self.query(line)

    def print_server(self):
        return parse_print(self.query("print server"))

    def print_sched(self, name=None):
        return parse_print(self.query("print sched" + (" " + name if name else "")))


# --- qmgr syntax --------------------------------------------------------------------------------------

_OP_RE = re.compile(r"\s*(\+=|-=|=)\s*")


def _split_unquoted(text, sep=","):
    """Split at ``sep`` outside quotes; strips the quotes."""
    parts, buf, quote = [], [], None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                buf.append(ch)
        elif ch in "\"'":
            quote = ch
        elif ch == sep:
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    if quote:
        raise PbsError("unbalanced quote in %r" % text)
    parts.append("".join(buf).strip())
    return parts


def unquote(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def quote(value):
    """A value as qmgr input: quoted when it holds a space, comma, quote or '#' (qmgr.c's rule plus '#')."""
    value = str(value)
    if value == "":
        return '""'
    if re.search(r"[\s,\"'#]", value):
        q = "'" if '"' in value else '"'
        return q + value + q
    return value


def parse_qmgr_command(line):
    """One qmgr directive -> dict(verb, object, name, attribute, op, value) (``value`` unquoted text).

    Handles what ``print`` writes and what this module sends: ``create|delete <obj> [name]``,
    ``set|unset <obj> [name] attr[.res] [op value]``. For ``set sched`` the scheduler name is optional.
    """
    text = line.strip()
    match = re.match(r"^(create|delete|set|unset)\s+(server|queue|sched|resource|node|hook)\b\s*(.*)$", text)
    if not match:
        raise PbsError("not a qmgr directive: %r" % line)
    verb, obj, rest = match.groups()
    result = {"verb": verb, "object": obj, "name": None, "attribute": None, "op": None, "value": None}
    if verb in ("create", "delete"):
        parts = rest.split(None, 1)
        result["name"] = parts[0] if parts else None
        result["value"] = parts[1] if len(parts) > 1 else None
        return result
    op = _OP_RE.search(rest)
    head = rest[: op.start()] if op else rest
    tokens = head.split()
    if obj == "server":
        expected = 1
    elif obj == "sched":
        expected = len(tokens)  # "set sched attr" or "set sched NAME attr"
    else:
        expected = 2
    if not tokens or len(tokens) != expected or len(tokens) > 2:
        raise PbsError("cannot read qmgr directive %r" % line)
    if len(tokens) == 2:
        result["name"] = tokens[0]
    result["attribute"] = tokens[-1]
    if op:
        result["op"] = op.group(1)
        result["value"] = rest[op.end():]
    elif verb == "set":
        raise PbsError("qmgr 'set' without a value: %r" % line)
    return result


def parse_print(text):
    """``qmgr -c 'print server'`` / ``'print sched'`` output -> state dict.

    ``{"resources": {name: {"type":..., "flag":...}}, "queues": {name: {attr: [values]}},
    "server": {attr: [values]}, "sched": {name: {attr: [values]}}}``; every value list holds the raw,
    unquoted values in the order printed.
    """
    state = {"resources": {}, "queues": {}, "server": {}, "sched": {}}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # print also writes hooks as base64 blobs after 'import hook'; they are not managed here.
        if line.startswith("import ") or not re.match(r"^(create|delete|set|unset)\s", line):
            continue
        try:
            cmd = parse_qmgr_command(line)
        except PbsError as exc:
            raise PbsError("line %d of qmgr print output: %s" % (number, exc)) from exc
        obj = cmd["object"]
        if obj in ("node", "hook"):
            continue
        if cmd["verb"] == "create":
            if obj == "queue":
                state["queues"].setdefault(cmd["name"], {})
            elif obj == "resource":
                state["resources"].setdefault(cmd["name"], {})
            elif obj == "sched":
                state["sched"].setdefault(cmd["name"], {})
            continue
        if obj == "resource":
            state["resources"].setdefault(cmd["name"], {})[cmd["attribute"]] = unquote(cmd["value"])
            continue
        if obj == "queue":
            target = state["queues"].setdefault(cmd["name"], {})
        elif obj == "sched":
            target = state["sched"].setdefault(cmd["name"] or "default", {})
        else:
            target = state["server"]
        values = _split_unquoted(cmd["value"]) if cmd["value"] is not None else []
        if cmd["op"] == "+=":
            target.setdefault(cmd["attribute"], []).extend(values)
        else:
            target[cmd["attribute"]] = values
    return state


# --- JSON outputs -----------------------------------------------------------------------------------


class _Multi(list):
    """A JSON key that occurred more than once in one object (entity limits)."""


def _pairs(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            prior = obj[key]
            if not isinstance(prior, _Multi):
                prior = _Multi([prior])
            prior.append(value)
            obj[key] = prior
        else:
            obj[key] = value
    return obj


def loads_pbs_json(text):
    """Parse PBS's ``-F json`` output, keeping repeated keys (as a list) instead of the last one."""
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except ValueError as exc:
        raise PbsError("PBS JSON output does not parse: %s" % exc) from exc


def _json_value_strings(value):
    """A qstat JSON value as the list of strings qmgr would print."""
    values = value if isinstance(value, list) else [value]
    out = []
    for item in values:
        if isinstance(item, bool):
            out.append("True" if item else "False")
        elif isinstance(item, float) and item.is_integer():
            out.append(str(int(item)))
        else:
            out.append(str(item))
    # Lists stay comma-joined strings here (qstat prints them so); normalise() splits the list kinds.
    return out


def parse_qstat_queues(text):
    """``qstat -Qf -F json`` -> {queue: {attr[.res]: [values]}} in the same shape as :func:`parse_print`."""
    data = loads_pbs_json(text)
    queues = data.get("Queue")
    if queues is None:
        raise PbsError("qstat -Qf -F json output has no 'Queue' object")
    result = {}
    for name, attrs in queues.items():
        flat = {}
        for attr, value in attrs.items():
            parts = value if isinstance(value, list) else [value]
            if parts and all(isinstance(p, dict) for p in parts):
                # a resource list that qstat printed in more than one run of lines
                for part in parts:
                    for res, inner in part.items():
                        flat.setdefault("%s.%s" % (attr, res), []).extend(_json_value_strings(inner))
            else:
                flat[attr] = _json_value_strings(value)
        result[name] = flat
    return result


# --- attribute tables ------------------------------------------------------------------------------
# Kinds: int, float, bool, str, size, time, queue_type, acl (unordered list), list (ordered list),
# entity (entity limits such as [u:PBS_GENERIC=16]), res (a resource list attribute: the kind comes
# from the resource named after the dot).

BUILTIN_RESOURCES = {
    "ncpus": "long", "mem": "size", "vmem": "size", "pmem": "size", "pvmem": "size", "walltime": "time",
    "cput": "time", "pcput": "time", "nodect": "long", "mpiprocs": "long", "ompthreads": "long",
    "nice": "long", "file": "size", "place": "string", "select": "string", "arch": "string",
    "host": "string", "vnode": "string", "preempt_targets": "string", "software": "string",
    "site": "string", "max_walltime": "time", "min_walltime": "time", "soft_walltime": "time",
    "naccelerators": "long", "accelerator": "boolean", "accelerator_model": "string",
    "accelerator_memory": "size", "hbmem": "size", "aoe": "string", "eoe": "string",
}
_RESOURCE_KIND = {"long": "int", "float": "float", "size": "size", "time": "time", "string": "str",
                  "boolean": "bool", "string_array": "list"}

_RESOURCE_LISTS = {"resources_max", "resources_min", "resources_default", "resources_available",
                   "default_chunk", "max_user_res", "max_group_res", "max_user_res_soft",
                   "max_group_res_soft"}
_ENTITY_RESOURCE_LISTS = {"max_run_res", "max_run_res_soft", "max_queued_res"}

QUEUE_ATTRIBUTES = {
    "queue_type": "queue_type", "Priority": "int", "enabled": "bool", "started": "bool",
    "acl_group_enable": "bool", "acl_groups": "acl", "acl_user_enable": "bool", "acl_users": "acl",
    "acl_host_enable": "bool", "acl_hosts": "acl", "from_route_only": "bool", "kill_delay": "int",
    "max_array_size": "int", "max_queuable": "int", "max_running": "int", "max_user_run": "int",
    "max_group_run": "int", "max_user_run_soft": "int", "max_group_run_soft": "int",
    "max_run": "entity", "max_run_soft": "entity", "max_queued": "entity", "backfill_depth": "int",
    "checkpoint_min": "int", "route_destinations": "list", "route_held_jobs": "bool",
    "route_waiting_jobs": "bool", "route_lifetime": "int", "route_retry_time": "int",
    "alt_router": "bool", "node_group_key": "list", "partition": "str", "comment": "str",
    "require_cred_enable": "bool", "require_cred": "str", "queued_jobs_threshold": "entity",
}
SERVER_ATTRIBUTES = {
    "scheduling": "bool", "default_queue": "str", "managers": "acl", "operators": "acl",
    "acl_roots": "acl", "acl_hosts": "acl", "acl_host_enable": "bool", "acl_users": "acl",
    "acl_user_enable": "bool", "acl_resv_users": "acl", "acl_resv_user_enable": "bool",
    "query_other_jobs": "bool", "log_events": "int", "mail_from": "str", "scheduler_iteration": "int",
    "resv_enable": "bool", "node_fail_requeue": "int", "max_array_size": "int",
    "eligible_time_enable": "bool", "job_history_enable": "bool", "job_history_duration": "time",
    "max_concurrent_provision": "int", "max_job_sequence_id": "int", "flatuid": "bool",
    "default_qsub_arguments": "str", "default_qdel_arguments": "str", "backfill_depth": "int",
    "comment": "str", "max_run": "entity", "max_run_soft": "entity", "max_queued": "entity",
    "max_running": "int", "max_user_run": "int", "max_group_run": "int", "job_requeue_timeout": "time",
    "pbs_license_min": "int", "pbs_license_max": "int", "pbs_license_linger_time": "int",
    "node_group_enable": "bool", "node_group_key": "list", "job_sort_formula": "str",
    "python_restart_max_hooks": "int", "python_restart_max_objects": "int",
    "python_restart_min_interval": "time", "rpp_retry": "int", "rpp_highwater": "int",
    "restrict_res_to_release_on_suspend": "list", "power_provisioning": "bool",
    "max_user_res": "res", "queued_jobs_threshold": "entity",
}
SCHED_ATTRIBUTES = {
    "preempt_queue_prio": "int", "preempt_prio": "preempt_prio", "preempt_order": "preempt_order",
    "preempt_sort": "preempt_sort", "scheduling": "bool", "scheduler_iteration": "int",
    "sched_cycle_length": "time", "log_events": "int", "throughput_mode": "bool",
    "opt_backfill_fuzzy": "fuzzy", "job_sort_formula_threshold": "float",
    "sched_preempt_enforce_resumption": "bool", "server_dyn_res_alarm": "int",
    "job_run_wait": "job_run_wait", "partition": "str", "sched_host": "str", "sched_priv": "str",
    "sched_log": "str", "sched_port": "int", "do_not_span_psets": "bool", "only_explicit_psets": "bool",
    "preempt_targets_enable": "bool",
}
TABLES = {"queue": QUEUE_ATTRIBUTES, "server": SERVER_ATTRIBUTES, "sched": SCHED_ATTRIBUTES}
MANUAL = {"queue": "pbs_queue_attributes(7B)", "server": "pbs_server_attributes(7B)",
          "sched": "pbs_sched_attributes(7B)"}

PREEMPT_PRIO_LEVELS = ("express_queue", "starving_jobs", "fairshare", "queue_softlimits",
                       "server_softlimits", "normal_jobs")
# Entity types: u user, g group, p project, o overall (PBS_ALL only).
_ENTITY_RE = re.compile(r"^\[([ugpo]):(\"[^\"]+\"|[^=\]]+)=([^\]]+)\]$")

# --- value kinds -------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^(\d+)\s*([kmgtp]?)([bw]?)$", re.IGNORECASE)
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
_TRUE = {"true", "t", "y", "yes", "1"}
_FALSE = {"false", "f", "n", "no", "0"}


def _as_list(value):
    """Elements of a multi-valued attribute from a list, a comma-joined string, or both."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        text = str(item).strip()
        if text:
            out.extend(part for part in _split_unquoted(text) if part != "")
    return out


def _scalar(value, field):
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(values) != 1:
        raise PbsError("%s: expects one value, got %r. Fix: give a single value" % (field, value))
    return values[0]


def size_bytes(text):
    match = _SIZE_RE.match(str(text).strip())
    if not match:
        raise ValueError(text)
    number, mult, unit = match.groups()
    value = int(number) << _SIZE_SHIFT[mult.lower()]
    return value * 8 if unit.lower() == "w" else value


def time_seconds(text):
    text = str(text).strip()
    if re.match(r"^\d+$", text):
        return int(text)
    match = re.match(r"^(?:(\d+):)?(\d+):(\d+)$", text)
    if not match:
        raise ValueError(text)
    hours, minutes, seconds = match.groups()
    if int(seconds) > 59 or (hours is not None and int(minutes) > 59):
        raise ValueError(text)
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)


def format_time(seconds):
    hours, rest = divmod(int(seconds), 3600)
    return "%02d:%02d:%02d" % (hours, rest // 60, rest % 60)


def _normalise_scalar(kind, raw, field):
    """(display string as PBS prints it, comparison key) for one scalar value."""
    text = str(raw).strip() if not isinstance(raw, bool) else raw
    if kind == "int":
        if isinstance(raw, bool) or not re.match(r"^[+-]?\d+$", str(text)):
            raise PbsError("%s: %r is not a whole number. Fix: give an integer, e.g. 10" % (field, raw))
        return str(int(text)), int(text)
    if kind == "float":
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise PbsError("%s: %r is not a number. Fix: give e.g. 0.5" % (field, raw)) from None
        return ("%g" % value), value
    if kind == "bool":
        if isinstance(raw, bool):
            value = raw
        elif str(text).lower() in _TRUE:
            value = True
        elif str(text).lower() in _FALSE:
            value = False
        else:
            raise PbsError("%s: %r is not a boolean. Fix: use true or false" % (field, raw))
        return ("True" if value else "False"), value
    if kind == "size":
        try:
            value = size_bytes(text)
        except ValueError:
            raise PbsError("%s: %r is not a PBS size. Fix: write e.g. 2gb, 512mb or 1024kb" % (field, raw)) \
                from None
        display = str(text).lower().replace(" ", "")
        if display[-1:] not in ("b", "w"):
            display += "b"
        return display, value
    if kind == "time":
        try:
            value = time_seconds(text)
        except ValueError:
            raise PbsError("%s: %r is not a PBS duration. Fix: write HH:MM:SS (e.g. 04:00:00) or seconds"
                           % (field, raw)) from None
        return format_time(value), value
    if kind == "queue_type":
        lowered = str(text).lower()
        if lowered in ("e", "execution"):
            return "Execution", "Execution"
        if lowered in ("r", "route"):
            return "Route", "Route"
        raise PbsError("%s: %r is not a queue type. Fix: use Execution or Route" % (field, raw))
    if kind == "preempt_order":
        compact = re.sub(r"\s+", " ", str(text).strip())
        if not re.match(r"^[SCRD]{1,4}(?: \d{1,3} [SCRD]{1,4})*$", compact):
            raise PbsError("%s: %r is not a preempt_order. Fix: letters S (suspend), C (checkpoint), "
                           "R (requeue), D (delete) in the order to try, optionally with percentages of "
                           "walltime, e.g. \"R\", \"RD\" or \"SCR 80 SC 50 S\"" % (field, raw))
        return compact, compact
    if kind == "preempt_prio":
        levels = [p.strip() for p in str(text).split(",")]
        for level in levels:
            for part in level.split("+"):
                if part.strip() not in PREEMPT_PRIO_LEVELS:
                    raise PbsError("%s: %r is not a preemption level. Fix: use %s, most important first, "
                                   "comma-separated (join levels with '+')"
                                   % (field, part.strip(), ", ".join(PREEMPT_PRIO_LEVELS)))
        display = ", ".join("+".join(p.strip() for p in level.split("+")) for level in levels)
        return display, display.replace(" ", "")
    if kind == "preempt_sort":
        if str(text) not in ("min_time_since_start", ""):
            raise PbsError("%s: %r is not supported. Fix: use min_time_since_start (preempt the job that "
                           "started last)" % (field, raw))
        return str(text), str(text)
    if kind == "fuzzy":
        if str(text).lower() not in ("off", "low", "medium", "high"):
            raise PbsError("%s: %r is not off, low, medium or high" % (field, raw))
        return str(text).lower(), str(text).lower()
    if kind == "job_run_wait":
        if str(text) not in ("none", "runjob_hook", "execjob_hook"):
            raise PbsError("%s: %r is not none, runjob_hook or execjob_hook" % (field, raw))
        return str(text), str(text)
    return str(text), str(text)


def _resource_kind(resource, resources, field):
    rtype = resources.get(resource)
    if rtype is None:
        known = sorted(resources)
        raise PbsError("%s: unknown resource %r. Fix: use a built-in or site resource (%s), or create it "
                       "first with qmgr 'create resource %s type=...'"
                       % (field, resource, ", ".join(known), resource))
    return _RESOURCE_KIND.get(rtype, "str")


def attribute_kind(object_type, attribute, resources=None):
    """The value kind of ``attribute`` (``name`` or ``name.resource``) on a server, queue or sched.

    Raises PbsError naming the attribute and the valid ones when it is unknown.
    """
    resources = resources if resources is not None else BUILTIN_RESOURCES
    table = TABLES[object_type]
    field = "%s attribute %r" % (object_type, attribute)
    base, dot, resource = attribute.partition(".")
    if dot:
        if base in _ENTITY_RESOURCE_LISTS and object_type != "sched":
            kind = _resource_kind(resource, resources, field)
            if kind not in ("int", "float", "size"):
                raise PbsError("%s: entity limits take numeric resources only (long, float, size); %r is %s"
                               % (field, resource, resources[resource]))
            return "entity:" + kind
        if (base in _RESOURCE_LISTS or table.get(base) == "res") and object_type != "sched":
            return _resource_kind(resource, resources, field)
        raise PbsError("%s: %r takes no resource. Fix: use one of the resource lists: %s"
                       % (field, base, ", ".join(sorted(_RESOURCE_LISTS | _ENTITY_RESOURCE_LISTS))))
    if attribute in (_RESOURCE_LISTS | _ENTITY_RESOURCE_LISTS) and object_type != "sched":
        raise PbsError("%s: name the resource, e.g. %s.ncpus" % (field, attribute))
    kind = table.get(attribute)
    if kind is None:
        close = [a for a in table if a.lower() == attribute.lower()]
        hint = " (did you mean %s?)" % close[0] if close else ""
        raise PbsError("%s: unknown attribute%s. Fix: use one of the %s attributes in %s: %s"
                       % (field, hint, object_type, MANUAL[object_type], ", ".join(sorted(table))))
    if kind == "entity":
        return "entity:int"
    return kind


def normalise(kind, value, field):
    """User or printed value -> (display list, comparison key). Raises PbsError for a bad value."""
    if kind.startswith("entity:"):
        value_kind = kind.split(":", 1)[1]
        entries = {}
        for item in _as_list(value):
            match = _ENTITY_RE.match(item.replace(" ", "") if '"' not in item else item)
            if not match:
                raise PbsError("%s: %r is not an entity limit. Fix: write [u:PBS_GENERIC=16] (every user), "
                               "[u:alice=8], [g:PBS_GENERIC=32], [p:proj=4] or [o:PBS_ALL=64] (overall)"
                               % (field, item))
            etype, entity, limit = match.groups()
            if etype == "o" and entity != "PBS_ALL":
                raise PbsError("%s: %r: the overall limit 'o' takes PBS_ALL. Fix: write [o:PBS_ALL=%s]"
                               % (field, item, limit))
            if etype != "o" and entity == "PBS_ALL":
                raise PbsError("%s: %r: PBS_ALL goes with 'o'. Fix: write [o:PBS_ALL=%s] or "
                               "[%s:PBS_GENERIC=%s]" % (field, item, limit, etype, limit))
            display, key = _normalise_scalar(value_kind, limit, "%s %s" % (field, item))
            if (etype, entity) in entries:
                raise PbsError("%s: %s:%s is limited twice. Fix: give each entity one limit"
                               % (field, etype, entity))
            entries[(etype, entity)] = (display, key)
        ordered = sorted(entries)
        return (["[%s:%s=%s]" % (t, e, entries[(t, e)][0]) for t, e in ordered],
                tuple((t, e, entries[(t, e)][1]) for t, e in ordered))
    if kind in ("acl", "list"):
        items = [i for i in _as_list(value) if i != ""]
        if kind == "acl":
            items = sorted(set(items))
        return items, tuple(items)
    if kind == "preempt_prio" and isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)  # printed one level per line if qmgr splits it
    display, key = _normalise_scalar(kind, _scalar(value, field), field)
    return [display], key


def render_value(display):
    return quote(",".join(display))


# --- desired vs current -----------------------------------------------------------------------------


def site_resources(state):
    """Built-in resources plus those the site created (``create resource`` in print server)."""
    resources = dict(BUILTIN_RESOURCES)
    for name, props in (state or {}).get("resources", {}).items():
        resources[name] = (props.get("type") or "string").lower()
    return resources


def validate_attributes(object_type, attributes, resources=None, name=None):
    """Normalised {attr: (display, key)} for the desired attributes, or PbsError for the first bad one."""
    if not isinstance(attributes, dict):
        raise PbsError("attributes must be a mapping of attribute name to value")
    result = {}
    who = "%s %s" % (object_type, name) if name else object_type
    for attr, value in attributes.items():
        if value is None:
            raise PbsError("%s: attribute %r has no value. Fix: give a value, or leave it out "
                           "(use purge to unset)" % (who, attr))
        kind = attribute_kind(object_type, attr, resources)
        result[attr] = normalise(kind, value, "%s attribute %r" % (who, attr))
    return result


def current_attributes(object_type, current, resources=None):
    """Printed {attr: [values]} -> {attr: (display, key)}; attributes outside the table kept as text."""
    result = {}
    for attr, values in (current or {}).items():
        try:
            kind = attribute_kind(object_type, attr, resources)
            result[attr] = normalise(kind, values, "%s attribute %r" % (object_type, attr))
        except PbsError:
            result[attr] = (list(values), tuple(values))
    return result


# Set first: the queue type (PBS refuses to enable a queue without one); set last: enabled and
# started, so that ACLs and limits are in place before a queue takes or starts jobs.
_FIRST = ("queue_type",)
_LAST = ("enabled", "started")


def _order(attr):
    if attr in _FIRST:
        return (0, attr)
    if attr in _LAST:
        return (2, _LAST.index(attr))
    return (1, attr)


def object_prefix(object_type, name=None):
    if object_type == "queue":
        return "queue %s" % name
    if object_type == "sched":
        return "sched" if name in (None, "default") else "sched %s" % name
    return "server"


def plan(object_type, desired, current, *, name=None, resources=None, purge=False, exists=True,
         protected=()):
    """Compare and return ``{"changes": [...], "commands": [...], "before": {...}, "after": {...}}``.

    ``desired``: {attr: value} as the user wrote it. ``current``: {attr: [values]} as printed, or None
    when the object does not exist (a queue to create). With ``purge`` the attributes printed but not
    desired are unset (except ``protected`` ones). Only differences produce commands.
    """
    want = validate_attributes(object_type, desired, resources, name)
    have = current_attributes(object_type, current or {}, resources)
    prefix = object_prefix(object_type, name)
    changes, commands = [], []
    if not exists:
        commands.append("create %s" % prefix)
    for attr in sorted(want, key=_order):
        display, key = want[attr]
        if attr in have and have[attr][1] == key:
            continue
        before = have.get(attr, (None,))[0]
        changes.append({"attribute": attr, "before": before, "after": display})
        commands.append("set %s %s = %s" % (prefix, attr, render_value(display)))
    if purge:
        for attr in sorted(set(have) - set(want) - set(protected)):
            changes.append({"attribute": attr, "before": have[attr][0], "after": None})
            commands.append("unset %s %s" % (prefix, attr))
    before = {a: _flat(v[0]) for a, v in have.items()} if exists else {}
    after = dict(before)
    for change in changes:
        if change["after"] is None:
            after.pop(change["attribute"], None)
        else:
            after[change["attribute"]] = _flat(change["after"])
    return {"changes": changes, "commands": commands, "before": before, "after": after}


def _flat(display):
    return display[0] if len(display) == 1 else list(display)


# --- the site model, in PBS terms ---------------------------------------------------------------------

PREEMPT_QUEUE_PRIO = 150  # OpenPBS default: queues at or above it are express queues
QUEUE_PRIORITY_MAX = 1023
QUEUE_NAME_MAX = 15


def _check_queue_name(name, errors):
    if len(name) > QUEUE_NAME_MAX or not re.match(r"^[A-Za-z][A-Za-z0-9_-]*$", name):
        errors.append("partitions.%s: %r is not a valid PBS queue name. Fix: use at most %d characters, "
                      "a letter first, then letters, digits, '-' or '_'" % (name, name, QUEUE_NAME_MAX))


def pbs_queues(model):
    """Queue attributes derived from a validated site model (``site_model.validate``): burst queues first,
    then the rest in model order, because pbs_server refuses a ``preempt_targets`` naming a queue that
    does not exist yet (qmgr: "Unknown queue", seen on OpenPBS 23.06.06).

    Production partition -> express queue (``Priority`` = preempt_queue_prio + priority_tier), whose
    jobs may preempt burst jobs only (``resources_default.preempt_targets = queue=<burst>``).
    Burst partition -> normal queue (``Priority`` = priority_tier, below preempt_queue_prio) with the
    per-user and overall limits, the walltime cap and ``kill_delay`` = grace time (SIGTERM then SIGKILL).
    """
    errors = []
    burst = model["burst"]
    burst_names = model["burst_partitions"]
    queues = []
    for part in model["partitions"]:
        name = part["name"]
        _check_queue_name(name, errors)
        tier = part["priority_tier"]
        attrs = {"queue_type": "Execution"}
        if part["class"] == "production":
            priority = PREEMPT_QUEUE_PRIO + tier
            if priority > QUEUE_PRIORITY_MAX:
                errors.append("partitions.%s.priority_tier: %d gives queue Priority %d, above PBS's %d. "
                              "Fix: use a priority_tier of at most %d"
                              % (name, tier, priority, QUEUE_PRIORITY_MAX, QUEUE_PRIORITY_MAX - PREEMPT_QUEUE_PRIO))
            attrs["Priority"] = priority
            if part["max_time_minutes"] is not None:
                attrs["resources_max.walltime"] = format_time(part["max_time_minutes"] * 60)
            attrs["resources_default.preempt_targets"] = (
                ",".join("queue=%s" % b for b in burst_names) if burst_names else "NONE")
        else:
            if tier >= PREEMPT_QUEUE_PRIO:
                errors.append("partitions.%s.priority_tier: %d would make the burst queue an express queue "
                              "(Priority >= %d) that preempts others. Fix: leave priority_tier out or use "
                              "less than %d" % (name, tier, PREEMPT_QUEUE_PRIO, PREEMPT_QUEUE_PRIO))
            attrs["Priority"] = tier
            walltime = format_time(burst["max_walltime_minutes"] * 60)
            attrs["resources_max.walltime"] = walltime
            attrs["resources_default.walltime"] = walltime
            # Burst jobs never preempt anything.
            attrs["resources_default.preempt_targets"] = "NONE"
            attrs["max_run"] = ["[u:PBS_GENERIC=%d]" % burst["per_user"]["max_jobs"]]
            attrs["max_queued"] = ["[u:PBS_GENERIC=%d]" % burst["per_user"]["max_submit_jobs"]]
            attrs["max_run_res.ncpus"] = ["[o:PBS_ALL=%d]" % burst["max_cores"],
                                          "[u:PBS_GENERIC=%d]" % burst["per_user"]["max_cores"]]
            attrs["kill_delay"] = burst["grace_time"]
        if part["allow_groups"]:
            attrs["acl_group_enable"] = True
            attrs["acl_groups"] = list(part["allow_groups"])
        else:
            attrs["acl_group_enable"] = False
        attrs["enabled"] = True
        attrs["started"] = True
        queues.append({"name": name, "attributes": attrs})
    if errors:
        raise PbsError("site model cannot be expressed in PBS:\n" + "\n".join("  - " + e for e in errors))
    queues.sort(key=lambda queue: queue["name"] not in burst_names)  # stable: model order otherwise
    for queue in queues:  # the derivation must itself pass the attribute table
        validate_attributes("queue", queue["attributes"], name=queue["name"])
    return queues


def pbs_server_attributes(model):
    default = next(p["name"] for p in model["partitions"] if p["default"])
    return {"default_queue": default, "scheduling": True}


def pbs_sched_attributes(model, preempt_order="RD", preempt_sort="min_time_since_start"):
    """Scheduler attributes for preemption (``qmgr -c 'set sched ...'``).

    ``preempt_order`` "RD": requeue, and delete a job that cannot be requeued (qsub -r n), so a
    production job is never left waiting behind burst work (SLURM's PreemptMode=REQUEUE does the same).
    """
    attrs = {
        "preempt_queue_prio": PREEMPT_QUEUE_PRIO,
        "preempt_prio": "express_queue, normal_jobs",
        "preempt_order": preempt_order,
        "preempt_sort": preempt_sort,
    }
    validate_attributes("sched", attrs)
    return attrs


# --- ensure: what the modules do -----------------------------------------------------------------------


def _result(outcome, check_mode, qmgr):
    if outcome["commands"] and not check_mode:
        qmgr.apply(outcome["commands"])
    return {
        "changed": bool(outcome["commands"]),
        "commands": outcome["commands"],
        "changes": outcome["changes"],
        "diff": {"before": outcome["before"], "after": outcome["after"]},
    }


def ensure_queue(qmgr, name, attributes=None, *, state="present", purge=False, check_mode=False):
    """Make queue ``name`` have ``attributes`` (only differences sent), or delete it (state=absent)."""
    current = qmgr.print_server()
    queues = current["queues"]
    if state == "absent":
        exists = name in queues
        before = {a: _flat(v) for a, v in queues.get(name, {}).items()}
        outcome = {"commands": ["delete queue %s" % name] if exists else [],
                   "changes": [{"attribute": "queue", "before": name, "after": None}] if exists else [],
                   "before": before, "after": {}}
        return _result(outcome, check_mode, qmgr)
    exists = name in queues
    if not exists and "queue_type" not in (attributes or {}):
        raise PbsError("queue %s does not exist and queue_type is not given. Fix: set attributes.queue_type "
                       "to Execution (or Route) so the queue can be created" % name)
    outcome = plan("queue", attributes or {}, queues.get(name), name=name, resources=site_resources(current),
                   purge=purge, exists=exists)
    return _result(outcome, check_mode, qmgr)


def ensure_server(qmgr, attributes, *, check_mode=False):
    current = qmgr.print_server()
    outcome = plan("server", attributes or {}, current["server"], resources=site_resources(current))
    return _result(outcome, check_mode, qmgr)


def ensure_sched(qmgr, attributes, name="default", *, check_mode=False):
    current = qmgr.print_sched(None if name == "default" else name)
    if name not in current["sched"]:
        raise PbsError("scheduler %s not found in qmgr 'print sched' output. Fix: create it first or use "
                       "the default scheduler" % name)
    outcome = plan("sched", attributes or {}, current["sched"][name], name=name)
    return _result(outcome, check_mode, qmgr)
