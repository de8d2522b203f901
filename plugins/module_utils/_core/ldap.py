# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Directory access for onprem.daskhpc, built on ldap3.

Pure Python (no Ansible imports) so that the modules, the lookup plugin,
the ``daskhpc`` package (audit reports) and the tests share it unchanged.

Every filter value goes through ``ldap3``'s ``escape_filter_chars``; every
search is paged; every failure the operator can act on raises ``LdapError``
with a message that says what failed and what to check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl

try:
    import ldap3
    from ldap3.core import exceptions as ldap_exc
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn, parse_dn

    HAS_LDAP3 = True
    LDAP3_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without ldap3
    HAS_LDAP3 = False
    LDAP3_IMPORT_ERROR = exc

GROUP_SCHEMAS = ("posixGroup", "groupOfNames", "group")

# What each directory schema (site model ldap.schema) stores where. rfc2307: posixGroup lists member
# uids (memberUid), so groups cannot nest. rfc2307bis: groupOfNames lists member DNs, users or groups.
# ad (Active Directory, RFC 2307 attributes on its own classes): group lists member DNs, users are
# `user` entries whose login name is sAMAccountName.
SCHEMAS = {
    "rfc2307": {"group_class": "posixGroup", "user_class": "posixAccount", "login_attribute": "uid"},
    "rfc2307bis": {"group_class": "groupOfNames", "user_class": "posixAccount", "login_attribute": "uid"},
    "ad": {"group_class": "group", "user_class": "user", "login_attribute": "sAMAccountName"},
}
# How deep nested groups are followed (sssd.conf ldap_group_nesting_level is set to the same, so
# the name service and this module agree on who is a member).
MAX_NESTING = 4

PAGE_SIZE = 500
# OR-filters longer than this are split so no single search grows unbounded.
FILTER_CHUNK = 200


class LdapError(Exception):
    """A directory problem described so that the operator can act on it."""


class DirectoryUnreachable(LdapError):
    pass


class BindRefused(LdapError):
    pass


class TlsFailed(LdapError):
    pass


class GroupNotFound(LdapError):
    pass


def require_ldap3():
    if not HAS_LDAP3:
        raise LdapError("the Python library ldap3 is missing on this host (%s). Fix: install it "
                        "(Debian: apt-get install python3-ldap3; pip: pip install ldap3)" % (LDAP3_IMPORT_ERROR,))


# --- filters -------------------------------------------------------------------


def eq_filter(attribute, value):
    """``(attribute=value)`` with the value escaped, so ``*)(uid=*`` matches only itself."""
    return "(%s=%s)" % (attribute, escape_filter_chars(str(value)))


def and_filter(*parts):
    parts = [p for p in parts if p]
    return parts[0] if len(parts) == 1 else "(&%s)" % "".join(parts)


def or_filter(parts):
    parts = list(parts)
    return parts[0] if len(parts) == 1 else "(|%s)" % "".join(parts)


# --- passwords -----------------------------------------------------------------


def ssha_hash(password, salt=None):
    """RFC 2307 ``{SSHA}`` of *password* with a random (or the given) salt."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def password_matches(password, stored):
    """True when *stored* (a userPassword value) is the hash of, or equal to, *password*.

    Understands ``{SSHA}`` and ``{SHA}``; anything else (e.g. ``{CRYPT}``) counts
    as not matching, so the module writes a fresh ``{SSHA}`` hash.
    """
    if stored is None:
        return False
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8", "replace")
    pw = password.encode("utf-8")
    upper = stored[:6].upper()
    try:
        if upper == "{SSHA}":
            raw = base64.b64decode(stored[6:])
            digest, salt = raw[:20], raw[20:]
            return hmac.compare_digest(hashlib.sha1(pw + salt).digest(), digest)
        if stored[:5].upper() == "{SHA}":
            return hmac.compare_digest(hashlib.sha1(pw).digest(), base64.b64decode(stored[5:]))
    except (ValueError, TypeError):
        return False
    if stored.startswith("{"):
        return False
    return hmac.compare_digest(stored.encode("utf-8"), pw)


def reuse_or_hash(password, stored=None):
    """The stored hash if it still matches *password*, else a new ``{SSHA}`` hash.

    Lets a template carry a salted hash and still be idempotent.
    """
    if stored and password_matches(password, stored) and str(stored)[:6].upper() == "{SSHA}":
        return stored
    return ssha_hash(password)


# --- connection ----------------------------------------------------------------


def _server_for(uri, ca_file, timeout):
    if not uri or not str(uri).startswith(("ldap://", "ldaps://", "ldapi://")):
        raise LdapError("server_uri %r is not an LDAP URI. Fix: write e.g. ldaps://ldap.example.org "
                        "or ldap://ldap.example.org with start_tls" % (uri,))
    if str(uri).startswith("ldapi://"):
        return ldap3.Server(uri, get_info=ldap3.NONE, connect_timeout=timeout)
    tls = None
    if ca_file:
        if not os.path.isfile(ca_file):
            raise TlsFailed("CA file %s does not exist. Fix: deploy the site CA (playbooks/pki.yml) or set "
                            "ca_file to the CA bundle that signed the directory's certificate" % ca_file)
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file, version=ssl.PROTOCOL_TLS_CLIENT)
    return ldap3.Server(uri, use_ssl=str(uri).startswith("ldaps://"), tls=tls,
                        get_info=ldap3.NONE, connect_timeout=timeout)


def connect(uri, bind_dn=None, bind_pw=None, *, start_tls=True, ca_file=None, timeout=5):
    """An open, bound ``ldap3.Connection``; raises ``LdapError`` subclasses with actionable messages.

    TLS (``ldaps://`` or StartTLS) is verified against *ca_file*; without a
    CA file TLS is refused, because an unverified channel would leak the
    bind password to anyone in the middle.
    """
    require_ldap3()
    uri = str(uri)
    secure = uri.startswith("ldaps://") or (start_tls and uri.startswith("ldap://"))
    if secure and not ca_file:
        raise TlsFailed("no CA file given for %s. Fix: set ca_file to the site CA bundle "
                        "(default /etc/daskhpc/tls/ca.pem, deployed by playbooks/pki.yml)" % uri)
    server = _server_for(uri, ca_file if secure else None, timeout)
    conn = ldap3.Connection(server, user=bind_dn, password=bind_pw, raise_exceptions=True,
                            receive_timeout=timeout, auto_bind=ldap3.AUTO_BIND_NONE,
                            authentication=ldap3.SIMPLE if bind_dn else ldap3.ANONYMOUS)
    try:
        conn.open()
    except ldap_exc.LDAPSocketOpenError as exc:
        if "ssl" in str(exc).lower() or "certificate" in str(exc).lower():
            raise TlsFailed(_tls_message(uri, ca_file, exc)) from exc
        raise DirectoryUnreachable(
            "directory unreachable: cannot connect to %s (%s). Fix: check that slapd is running on the "
            "directory server (systemctl status slapd; samba-ad-dc on a Samba domain controller), that the "
            "URI's host and port are right, and that no firewall blocks it" % (uri, _short(exc))) from exc
    except ldap_exc.LDAPException as exc:
        raise DirectoryUnreachable("directory unreachable: %s (%s)" % (uri, _short(exc))) from exc
    if secure and uri.startswith("ldap://"):
        try:
            conn.start_tls()
        except (ldap_exc.LDAPStartTLSError, ldap_exc.LDAPCertificateError, ssl.SSLError) as exc:
            _close(conn)
            raise TlsFailed(_tls_message(uri, ca_file, exc)) from exc
        except ldap_exc.LDAPException as exc:
            _close(conn)
            raise TlsFailed("StartTLS refused by %s (%s). Fix: configure TLS on the server "
                            "(TLSCertificateFile) or use ldaps://" % (uri, _short(exc))) from exc
    try:
        conn.bind()
    except ldap_exc.LDAPInvalidCredentialsResult as exc:
        _close(conn)
        raise BindRefused("bind refused for %s at %s: invalid credentials. Fix: check the bind DN and its "
                          "password (bind_pw, kept in the inventory's vault)" % (bind_dn, uri)) from exc
    except ldap_exc.LDAPConfidentialityRequiredResult as exc:
        _close(conn)
        raise BindRefused("bind refused for %s at %s: the server requires TLS for binds. Fix: use "
                          "start_tls: true or an ldaps:// URI" % (bind_dn, uri)) from exc
    except (ldap_exc.LDAPStrongerAuthRequiredResult, ldap_exc.LDAPInappropriateAuthenticationResult,
            ldap_exc.LDAPUnwillingToPerformResult) as exc:
        _close(conn)
        raise BindRefused("bind refused for %s at %s: %s. Fix: check the bind DN, its password and the "
                          "server's access rules" % (bind_dn, uri, _short(exc))) from exc
    except ldap_exc.LDAPSocketOpenError as exc:
        raise DirectoryUnreachable("directory unreachable: %s closed the connection (%s)" % (uri, _short(exc))) from exc
    except ldap_exc.LDAPException as exc:
        _close(conn)
        raise BindRefused("bind refused for %s at %s: %s" % (bind_dn, uri, _short(exc))) from exc
    return conn


def connect_params(params):
    """``connect()`` from the modules' shared connection options."""
    return connect(params["server_uri"], params.get("bind_dn"), params.get("bind_pw"),
                   start_tls=params.get("start_tls", True), ca_file=params.get("ca_file"),
                   timeout=params.get("timeout") or 5)


def _tls_message(uri, ca_file, exc):
    return ("TLS with %s failed: the server certificate could not be verified against CA file %s (%s). Fix: "
            "make sure the server's certificate is issued by that CA and names the host in the URI"
            % (uri, ca_file, _short(exc)))


def _short(exc):
    text = str(exc) or exc.__class__.__name__
    return text if len(text) < 300 else text[:300] + "..."


def close(conn):
    """Unbind, ignoring errors (the connection may already be broken)."""
    _close(conn)


def _close(conn):
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real error
        pass


# --- reading -------------------------------------------------------------------


def paged_search(conn, base, search_filter, attributes=None, *, scope="SUBTREE", page_size=PAGE_SIZE):
    """Every matching entry as ``{"dn": ..., "attributes": {name: [str, ...]}}``, fetched page by page."""
    scope = {"BASE": ldap3.BASE, "LEVEL": ldap3.LEVEL, "SUBTREE": ldap3.SUBTREE}[scope]
    try:
        found = conn.extend.standard.paged_search(
            base, search_filter, search_scope=scope, attributes=attributes or ldap3.NO_ATTRIBUTES,
            paged_size=page_size, generator=True)
        return [_plain(e) for e in found if e.get("type") == "searchResEntry"]
    except ldap_exc.LDAPNoSuchObjectResult as exc:
        raise LdapError("search base %s does not exist in the directory. Fix: check the base DN "
                        "(ldap.base_dn/user_base/group_base in the site model)" % base) from exc
    except ldap_exc.LDAPInsufficientAccessRightsResult as exc:
        raise LdapError("the bind DN may not search %s. Fix: grant it read access" % base) from exc


def _plain(entry):
    attrs = {}
    raw = entry.get("raw_attributes") or {}
    for name, values in raw.items():
        attrs[name] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    return {"dn": entry["dn"], "attributes": attrs}


def read_entry(conn, dn, attributes=("*",)):
    """The entry at *dn* (as ``paged_search`` returns it), or None."""
    try:
        conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(attributes))
    except ldap_exc.LDAPNoSuchObjectResult:
        return None
    for entry in conn.response or []:
        if entry.get("type") == "searchResEntry":
            return _plain(entry)
    return None


def first(attrs, name, default=None):
    """First value of *name* from an attributes dict, case-insensitively."""
    for key, values in attrs.items():
        if key.lower() == name.lower() and values:
            return values[0]
    return default


def values_of(attrs, name):
    for key, values in attrs.items():
        if key.lower() == name.lower():
            return list(values)
    return []


def group_filter(name, schema):
    if schema not in GROUP_SCHEMAS:
        raise LdapError("group schema %r is not supported. Fix: use posixGroup (memberUid), "
                        "groupOfNames (member) or group (Active Directory)" % (schema,))
    return and_filter("(objectClass=%s)" % schema, eq_filter("cn", name))


def find_group(conn, group_base, name, schema="posixGroup"):
    """The group entry called *name*, or ``GroupNotFound`` naming where it looked."""
    member_attr = "memberUid" if schema == "posixGroup" else "member"
    found = paged_search(conn, group_base, group_filter(name, schema), ["cn", "gidNumber", "objectClass", member_attr])
    if not found:
        raise GroupNotFound("group %r not found: no %s with cn=%s under %s. Fix: create the group in the "
                            "directory (onprem.daskhpc.ldap_group) or correct the name in the site model "
                            "(groups / partitions[].allow_groups)" % (name, schema, name, group_base))
    if len(found) > 1:
        raise LdapError("group %r is ambiguous: %d entries under %s (%s). Fix: keep one group per name"
                        % (name, len(found), group_base, ", ".join(e["dn"] for e in found)))
    return found[0]


def uid_from_dn(dn):
    """The uid in a member DN's first RDN (``uid=alice,ou=people,...`` -> ``alice``), else None."""
    try:
        attr, value, _sep = parse_dn(dn)[0]
    except Exception:  # noqa: BLE001 - malformed DNs are skipped, not fatal
        return None
    return value if attr.lower() == "uid" else None


def schema_settings(schema=None, group_schema=None):
    """``SCHEMAS[schema]``; without *schema*, the one the older ``group_schema`` option implies."""
    if schema is None:
        schema = {"groupOfNames": "rfc2307bis", "group": "ad"}.get(group_schema, "rfc2307")
    if schema not in SCHEMAS:
        raise LdapError("directory schema %r is not supported. Fix: use rfc2307, rfc2307bis or ad" % (schema,))
    settings = dict(SCHEMAS[schema], schema=schema)
    if group_schema and group_schema != settings["group_class"]:
        group_class = settings["group_class"]
        raise LdapError("group schema %s does not fit directory schema %s (its groups are %s). Fix: leave "
                        "group_schema out or set it to %s" % (group_schema, schema, group_class, group_class))
    return settings


def effective_members(conn, group_base, names, schema="rfc2307", missing="error", *, max_depth=MAX_NESTING):
    """``{group: {login: via}}``: every member of each group, nested groups followed, for any schema.

    *via* is the chain of groups that gives the access, outermost first: ``["datasci"]`` for a direct
    member, ``["datasci", "ml-team"]`` for one who is in ml-team, a member of datasci. Where a user is a
    member along several chains, the shortest (then the first in name order) is kept. Nested groups
    are followed *max_depth* levels deep, as sssd does (ldap_group_nesting_level); a cycle ends where
    it closes. This is the one reading of membership: the lookup, the sync module, the PKI user list
    and the audit all use it.
    """
    cfg = schema_settings(schema)
    result = {}
    for name in names:
        try:
            top = find_group(conn, group_base, name, cfg["group_class"])
        except GroupNotFound:
            if missing == "error":
                raise
            result[name] = {}
            continue
        result[name] = _walk(conn, top, [name], cfg, max_depth)
    return result


def _walk(conn, top, chain, cfg, max_depth):
    """Breadth first from the group entry *top*: ``{login: via}``, shortest chain first."""
    found = {}
    seen = {top["dn"].lower()}
    level = [(top, chain)]
    depth = 0
    while level:
        following = []
        for entry, via in level:
            if cfg["group_class"] == "posixGroup":
                for uid in values_of(entry["attributes"], "memberUid"):
                    found.setdefault(uid, via)
                continue
            for dn in sorted(values_of(entry["attributes"], "member")):
                if dn.lower() in seen:
                    continue
                seen.add(dn.lower())
                kind, value, member = _member(conn, dn, cfg)
                if kind == "user":
                    found.setdefault(value, via)
                elif kind == "group" and depth < max_depth:
                    following.append((member, via + [value]))
        level = sorted(following, key=lambda item: item[1])
        depth += 1
    return {login: found[login] for login in sorted(found)}


def _member(conn, dn, cfg):
    """("user", login, None), ("group", cn, entry) or (None, None, None) for one member DN."""
    if cfg["login_attribute"] == "uid" and uid_from_dn(dn):
        return "user", uid_from_dn(dn), None  # the common case needs no read
    if conn is None:
        return None, None, None
    entry = read_entry(conn, dn, ["objectClass", "cn", "member", cfg["login_attribute"]])
    if entry is None:
        return None, None, None
    classes = {c.lower() for c in values_of(entry["attributes"], "objectClass")}
    if cfg["group_class"].lower() in classes:
        return "group", first(entry["attributes"], "cn"), entry
    login = first(entry["attributes"], cfg["login_attribute"])
    return ("user", login, None) if login else (None, None, None)


def member_uids(conn, group_entry, schema="posixGroup"):
    """Sorted logins of a group's direct and nested members (*schema*: a group schema)."""
    cfg = schema_settings(group_schema=schema)
    return sorted(_walk(conn, group_entry, [first(group_entry["attributes"], "cn")], cfg, MAX_NESTING))


def resolve_groups(conn, group_base, names, schema="posixGroup", missing="error"):
    """``{group: [login, ...]}`` of effective members; a missing group raises, or maps to [] with
    ``missing='ignore'``. *schema* is a group schema (posixGroup, groupOfNames, group) or a directory
    schema (rfc2307, rfc2307bis, ad)."""
    directory = schema if schema in SCHEMAS else schema_settings(group_schema=schema)["schema"]
    found = effective_members(conn, group_base, names, directory, missing)
    return {name: sorted(members) for name, members in found.items()}


def find_users(conn, user_base, uids, attributes=("uid",), schema="rfc2307"):
    """``{login: attributes}`` for the logins that exist under *user_base* (paged, escaped, chunked)."""
    cfg = schema_settings(schema)
    login = cfg["login_attribute"]
    uids = sorted(set(uids))
    attributes = sorted(set(attributes) | {login})
    users = {}
    for start in range(0, len(uids), FILTER_CHUNK):
        chunk = uids[start:start + FILTER_CHUNK]
        flt = and_filter("(objectClass=%s)" % cfg["user_class"], or_filter(eq_filter(login, u) for u in chunk))
        for entry in paged_search(conn, user_base, flt, attributes):
            uid = first(entry["attributes"], login)
            if uid in chunk:
                users[uid] = entry["attributes"]
    return users


def member_records(conn, user_base, members, attributes, schema="rfc2307", *, via=None):
    """One dict per member of *members* (``{group: [login]}``): uid, groups, the user's *attributes*,
    and with *via* (``effective_members``' answer) ``via``: ``{group: chain}``."""
    in_groups = {}
    for group, uids in members.items():
        for uid in uids:
            in_groups.setdefault(uid, []).append(group)
    users = find_users(conn, user_base, in_groups, attributes, schema)
    records = []
    for uid in sorted(in_groups):
        record = {"uid": uid, "groups": sorted(in_groups[uid])}
        if via is not None:
            record["via"] = {g: via[g][uid] for g in record["groups"] if uid in via.get(g, {})}
        if uid in users:
            for name in attributes:
                record[name] = values_of(users[uid], name)
        else:
            record["missing_entry"] = True
        records.append(record)
    return records


def whoami(conn):
    try:
        return conn.extend.standard.who_am_i() or ""
    except ldap_exc.LDAPException:
        return ""


# --- writing -------------------------------------------------------------------


def normalise_attributes(attrs):
    """Attribute values as sorted lists of strings; None or [] means 'absent'."""
    out = {}
    for name, value in attrs.items():
        if value is None:
            out[name] = []
        elif isinstance(value, (list, tuple, set)):
            out[name] = [str(v) for v in value if v is not None]
        else:
            out[name] = [str(value)]
    return out


def plan_entry(current, desired, object_classes):
    """Changes turning *current* attributes into *desired* ones.

    Returns ``{attr: new_values}`` for every attribute to replace (``[]``
    deletes it). Attributes not mentioned in *desired* are left alone;
    objectClasses are only ever added, never removed.
    """
    changes = {}
    have_classes = {c.lower() for c in values_of(current, "objectClass")}
    if any(c.lower() not in have_classes for c in object_classes):
        merged = values_of(current, "objectClass") + [c for c in object_classes if c.lower() not in have_classes]
        changes["objectClass"] = merged
    for name, wanted in normalise_attributes(desired).items():
        have = values_of(current, name)
        if sorted(have) != sorted(wanted):
            changes[name] = wanted
    return changes


def plan_members(current, wanted, mode):
    """The member list after applying *wanted* in *mode* (exact, append or remove), order kept."""
    if mode == "exact":
        return list(dict.fromkeys(wanted))
    if mode == "append":
        return list(dict.fromkeys(list(current) + list(wanted)))
    if mode == "remove":
        drop = set(wanted)
        return [m for m in current if m not in drop]
    raise LdapError("members_mode %r is not supported. Fix: use exact, append or remove" % (mode,))


def _password_change(current, password, update_password, exists):
    """The userPassword to write, or None when the stored one already fits."""
    if password is None:
        return None
    if exists and update_password == "on_create":
        return None
    stored = values_of(current, "userPassword")
    if stored and password_matches(password, stored[0]):
        return None
    return ssha_hash(password)


def visible(attrs):
    """Attributes for diffs and results: passwords never shown."""
    return {k: ("********" if k.lower() == "userpassword" else (v[0] if len(v) == 1 else v))
            for k, v in sorted(attrs.items()) if v}


def ensure_entry(conn, dn, object_classes, attrs, *, password=None, update_password="always", check_mode=False):
    """Create or update the entry at *dn*; returns ``{changed, dn, before, after, changes}``."""
    existing = read_entry(conn, dn, ["*"])
    current = existing["attributes"] if existing else {}
    desired = normalise_attributes(attrs)
    new_password = _password_change(current, password, update_password, existing is not None)
    if existing is None:
        after = dict(desired)
        after["objectClass"] = list(object_classes)
        after = {k: v for k, v in after.items() if v}
        if new_password:
            after["userPassword"] = [new_password]
        if not check_mode:
            _apply(conn.add, dn, None, after)
        return {"changed": True, "dn": dn, "before": {}, "after": visible(after),
                "changes": sorted(after), "password_changed": bool(new_password)}
    changes = plan_entry(current, desired, object_classes)
    if new_password:
        changes["userPassword"] = [new_password]
    after = dict(current)
    after.update(changes)
    if changes and not check_mode:
        mods = {k: [(ldap3.MODIFY_REPLACE, v)] for k, v in changes.items()}
        _apply(conn.modify, dn, mods)
    return {"changed": bool(changes), "dn": dn, "before": visible(current), "after": visible(after),
            "changes": sorted(changes), "password_changed": bool(new_password)}


def delete_entry(conn, dn, check_mode=False):
    existing = read_entry(conn, dn, ["*"])
    if existing is None:
        return {"changed": False, "dn": dn, "before": {}, "after": {}}
    if not check_mode:
        _apply(conn.delete, dn)
    return {"changed": True, "dn": dn, "before": visible(existing["attributes"]), "after": {}}


def _apply(operation, dn, *args):
    try:
        operation(dn, *args)
    except ldap_exc.LDAPNoSuchObjectResult as exc:
        raise LdapError("cannot write %s: its parent does not exist. Fix: create the parent entry "
                        "(e.g. the ou) first" % dn) from exc
    except ldap_exc.LDAPInsufficientAccessRightsResult as exc:
        raise LdapError("cannot write %s: the bind DN has no write access. Fix: bind as the directory "
                        "administrator (bind_dn/bind_pw)" % dn) from exc
    except ldap_exc.LDAPObjectClassViolationResult as exc:
        raise LdapError("cannot write %s: object class violation (%s). Fix: give every attribute the "
                        "object classes require" % (dn, _short(exc))) from exc
    except ldap_exc.LDAPException as exc:
        raise LdapError("cannot write %s: %s" % (dn, _short(exc))) from exc


# --- users and groups ----------------------------------------------------------

USER_CLASSES = ["top", "inetOrgPerson", "posixAccount", "shadowAccount"]


def user_dn(uid, base):
    return "uid=%s,%s" % (escape_rdn(uid), base)


def group_dn(name, base):
    return "cn=%s,%s" % (escape_rdn(name), base)


def user_attributes(p):
    """posixAccount + inetOrgPerson attributes from the ldap_user options."""
    cn = p.get("cn") or p["uid"]
    attrs = {
        "uid": p["uid"],
        "cn": cn,
        "sn": p.get("sn") or cn.split()[-1],
        "uidNumber": p["uid_number"],
        "gidNumber": p["gid_number"],
        "homeDirectory": p.get("home_directory") or "/home/%s" % p["uid"],
        "loginShell": p.get("login_shell") or "/bin/bash",
    }
    for option, attr in (("given_name", "givenName"), ("mail", "mail"), ("gecos", "gecos")):
        if p.get(option) is not None:
            attrs[attr] = p[option]
    return attrs


def group_entry(p, schema, user_base, members):
    """(object classes, attributes) of a group in the given schema."""
    attrs = {"cn": p["name"]}
    if p.get("description") is not None:
        attrs["description"] = p["description"]
    if schema == "posixGroup":
        if p.get("gid_number") is None:
            raise LdapError("group %r: gid_number is required for posixGroup. Fix: give a gid_number "
                            "unique in the directory" % p["name"])
        attrs["gidNumber"] = p["gid_number"]
        attrs["memberUid"] = members
        return ["top", "posixGroup"], attrs
    if not members:
        raise LdapError("group %r: groupOfNames needs at least one member (schema rule). Fix: give members "
                        "or use state=absent" % p["name"])
    attrs["member"] = [user_dn(m, user_base) for m in members]
    return ["top", "groupOfNames"], attrs


def current_members(entry, schema):
    if entry is None:
        return []
    if schema == "posixGroup":
        return values_of(entry["attributes"], "memberUid")
    return [u for u in (uid_from_dn(d) for d in values_of(entry["attributes"], "member")) if u]


def ensure_group(conn, dn, p, check_mode=False):
    """ldap_group's state=present: the group with its members as *p* says; returns the module result."""
    schema = p.get("schema") or "posixGroup"
    existing = read_entry(conn, dn, ["*"])
    if existing is not None:
        classes = {c.lower() for c in values_of(existing["attributes"], "objectClass")}
        if schema.lower() not in classes:
            raise LdapError("%s exists but is not a %s (objectClass: %s). Fix: set schema to match the "
                            "directory (site model ldap.group_schema)"
                            % (dn, schema, ", ".join(values_of(existing["attributes"], "objectClass"))))
    before = current_members(existing, schema)
    if p.get("members") is None:
        members = before
    else:
        members = plan_members(before, p["members"], p.get("members_mode") or "exact")
    classes, attrs = group_entry(p, schema, p.get("user_base"), members)
    if sorted(members) == sorted(before) and existing is not None:
        # Same member set in another order is no change.
        attrs.pop("memberUid" if schema == "posixGroup" else "member")
    result = ensure_entry(conn, dn, classes, attrs, check_mode=check_mode)
    result.pop("password_changed", None)
    result["members"] = sorted(members)
    result["added"] = sorted(set(members) - set(before))
    result["removed"] = sorted(set(before) - set(members))
    return result


# --- Slurm associations from groups --------------------------------------------


def plan_association_sync(members, current, exclude=()):
    """(to_add, to_remove): users who should gain / lose their association, sorted.

    *members* are the directory's group members, *current* the users holding an
    association under the account. Users in *exclude* (e.g. admins managed by
    hand) are never touched.
    """
    keep_out = set(exclude)
    wanted = set(members) - keep_out
    have = set(current) - keep_out
    return sorted(wanted - have), sorted(have - wanted)
