# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""User names read from the directory are data, not commands.

Whoever can write a group's ``memberUid`` could otherwise reach sacctmgr (``alice,root`` is a list
to sacctmgr: two users), a path (``../x``), or an option of the next command (``--foo``). So every
name is checked before it is passed on, and a refused name is skipped and reported, never used:

* a portable POSIX account name: ``[a-z_][a-z0-9_-]{0,31}`` (no upper case, commas, whitespace,
  ``=``, dots or slashes; never starting with ``-``); a site may require more with its own pattern,
  which a name must match as well (stricter only);
* not a system account: never one of :data:`RESERVED`, and never a uid below ``min_uid``
  (default 1000; it can be raised, not lowered) where the uid is known - from the directory's
  ``uidNumber`` or the local account database.

Pure Python, standard library only.
"""

from __future__ import annotations

import pwd
import re

PORTABLE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
MIN_UID = 1000
# Always refused, whatever uid they have here: accounts of the system and of the daemons this
# collection runs, which must never be given a burst association or a credential.
RESERVED = frozenset((
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data",
    "backup", "list", "irc", "gnats", "nobody", "nogroup", "sshd", "messagebus", "systemd-network",
    "systemd-resolve", "systemd-timesync", "_apt", "slurm", "munge", "mysql", "openldap", "nslcd", "sssd", "_sssd",
    "prometheus", "daskhpc-exporter", "krbtgt", "guest", "pbsadmin", "pbsdata", "postgres", "admin",
    "administrator", "operator", "adm",
))
PORTABLE_TEXT = ("not a portable account name (lower-case letters, digits, '_' and '-', at most 32, not starting "
                 "with '-' or a digit; no commas, whitespace or '=')")


def check_settings(min_uid=MIN_UID, pattern=None):
    """Raise ValueError for settings that would weaken the check; returns the compiled *pattern*."""
    if not isinstance(min_uid, int) or isinstance(min_uid, bool) or min_uid < MIN_UID:
        raise ValueError("min_uid %r would let system accounts through: it can be raised above %d, not lowered"
                         % (min_uid, MIN_UID))
    try:
        return re.compile(pattern) if pattern else None
    except re.error as exc:
        raise ValueError("name_pattern %r is not a regular expression: %s" % (pattern, exc)) from None


def local_uid(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def refusal(name, uid=None, *, min_uid=MIN_UID, pattern=None, lookup=True):
    """Why *name* must not be used as an account name, or None when it may.

    *uid* is the directory's uidNumber when known; with *lookup* the local account database is
    asked as well (its uid counts when it is lower). *pattern* is an extra (compiled or text)
    regular expression the whole name must match.
    """
    if not isinstance(name, str) or not PORTABLE.fullmatch(name):
        return PORTABLE_TEXT
    if name in RESERVED:
        return "a system account name"
    if pattern is not None and not re.fullmatch(pattern, name):
        return "does not match the site's name_pattern %s" % getattr(pattern, "pattern", pattern)
    uids = []
    if uid is not None:
        try:
            uids.append(int(uid))
        except (TypeError, ValueError):
            return "uidNumber %r is not a number" % (uid,)
    if lookup:
        uids.append(local_uid(name))
    low = [u for u in uids if u is not None and u < min_uid]
    if low:
        return "uid %d is below %d: a system account" % (min(low), min_uid)
    return None


def split(names, uids=None, *, min_uid=MIN_UID, pattern=None, lookup=True):
    """``(accepted, refused)``: the usable names (order kept) and ``[{"name", "reason"}]`` for the others."""
    accepted, refused = [], []
    for name in names:
        reason = refusal(name, (uids or {}).get(name), min_uid=min_uid, pattern=pattern, lookup=lookup)
        if reason:
            refused.append({"name": name, "reason": reason})
        else:
            accepted.append(name)
    return accepted, refused
