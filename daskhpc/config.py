"""The site's client configuration: policy from the site file only, preferences from Dask's configuration.

The ``dask_client`` role writes ``/etc/dask/daskhpc.yaml`` (top key ``daskhpc``) from the
site model. Dask reads that directory by itself, but it also reads the user's own files
(``~/.config/dask/``, ``DASK_CONFIG``) and ``DASK_DASKHPC__*`` environment variables, any of
which could override the site's values. So the policy keys (``POLICY_KEYS``: partition, QOS,
account, TLS, limits, ...) are read from the site file directly and nowhere else. The user's
preferences (``USER_KEYS``: worker size, walltime, progress, ...) take the site file's values
unless the user's Dask configuration sets them; the policy checks bound them. The package's
defaults (``daskhpc/daskhpc.yaml``) fill in whatever the site file leaves out; none of them is
permissive (TLS is required unless the site file says otherwise).
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("daskhpc.yaml")
# Fixed on purpose: no environment variable or Dask setting may point the client at another file.
SITE_FILE = "/etc/dask/daskhpc.yaml"
# Who must own the site file (tests monkeypatch this together with SITE_FILE).
SITE_FILE_OWNER = 0

# Keys only the site file sets: they decide where jobs run, who may connect and how much may be used.
POLICY_KEYS = ("site", "scheduler", "partition", "qos", "account", "tls", "limits", "max-walltime", "grace-time",
               "allowed-groups", "metrics-targets-dir", "metrics-discovery-port", "metrics-scrapers", "python",
               "contact")
# Keys a user may set in their own Dask configuration; BurstPolicy checks the values against the limits.
USER_KEYS = ("worker-cores", "worker-memory", "workers-per-job", "walltime", "interface", "dashboard-address",
             "progress", "poll-interval", "log-directory", "adapt-idle")
# Policy mappings the site file may give only in part (the rest comes from the package defaults).
NESTED_KEYS = ("tls", "limits")


def defaults():
    """The package's own defaults for the ``daskhpc`` section."""
    with open(DEFAULTS_FILE, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["daskhpc"]


class NotConfigured(RuntimeError):
    """The site's client configuration is missing, incomplete or unsafe."""


def read_site_file():
    """The ``daskhpc`` section of the site file ({} when there is none).

    The file must be a regular file (not a symbolic link) owned by root and writable by nobody else:
    otherwise someone other than the site's admins could have written the policy.
    """
    try:
        fd = os.open(SITE_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise NotConfigured("the site file %s cannot be read safely (%s; it must be a regular file, not a symbolic "
                            "link). Fix: ask your HPC support team to re-run the dask_client role"
                            % (SITE_FILE, exc.strerror)) from exc
    with os.fdopen(fd, encoding="utf-8") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != SITE_FILE_OWNER or info.st_mode & 0o022:
            raise NotConfigured(
                "the site file %s is not a regular file owned by uid %d and writable only by it (owner uid %d, "
                "mode %04o), so its policy cannot be trusted. Fix: ask your HPC support team to re-run the "
                "dask_client role (it writes the file root-owned, mode 0644)"
                % (SITE_FILE, SITE_FILE_OWNER, info.st_uid, stat.S_IMODE(info.st_mode)))
        content = yaml.safe_load(handle) or {}
    section = content.get("daskhpc") if isinstance(content, dict) else None
    if not isinstance(section, dict):
        raise NotConfigured("the site file %s has no 'daskhpc' mapping. Fix: ask your HPC support team to re-run "
                            "the dask_client role" % SITE_FILE)
    return section


def policy(site_file=None):
    """The policy keys: the package defaults, overlaid by the site file and by nothing else."""
    base = defaults()
    site_file = read_site_file() if site_file is None else site_file
    result = {}
    for key in POLICY_KEYS:
        value = copy.deepcopy(base.get(key))
        given = site_file.get(key)
        if key == "tls" and isinstance(given, str):
            given = {"mode": given}  # the site model's bare mode
        if key in NESTED_KEYS and isinstance(value, dict) and isinstance(given, dict):
            value.update(given)
        elif key in site_file:
            value = given
        result[key] = value
    return result


def preferences(site_file=None):
    """The user-tunable keys: the user's Dask configuration where it sets them, else the site file's, else
    the package defaults."""
    base = defaults()
    site_file = read_site_file() if site_file is None else site_file
    result = {}
    for key in USER_KEYS:
        value = dask.config.get("daskhpc." + key, default=None)
        result[key] = value if value is not None else site_file.get(key, base.get(key))
    return result


def site_config():
    """The ``daskhpc`` configuration as a plain dict: the user's preferences plus the site's policy."""
    site_file = read_site_file()
    config = preferences(site_file)
    config.update(policy(site_file))
    return config


def contact(config=None):
    config = policy() if config is None else config
    return config.get("contact") or "your HPC support team"


def require_site(config=None):
    """Return the configuration, or raise NotConfigured saying what is missing and how to fix it."""
    config = site_config() if config is None else config
    missing = [key for key in ("site", "partition", "qos", "account") if not config.get(key)]
    if missing:
        raise NotConfigured(
            "daskhpc is not configured on this machine (missing %s in %s). "
            "Fix: ask %s to run the onprem.daskhpc.dask_client role here (it writes %s), "
            "and check with `daskhpc doctor`." % (", ".join(missing), SITE_FILE, contact(config), SITE_FILE))
    return config


def tls_mode(config=None):
    """``optional`` only when the site says so exactly; anything else (missing, misspelt) means ``required``."""
    config = policy() if config is None else config
    tls = config.get("tls")
    mode = tls if isinstance(tls, str) else (tls or {}).get("mode")
    return "optional" if mode == "optional" else "required"


def tls_paths(config=None):
    """Expanded paths of the site bundle, the CRL and the user's credential: dict with ``ca``, ``crl``, ``cert``,
    ``key`` (``~`` is the user's home)."""
    config = policy() if config is None else config
    tls = config.get("tls")
    tls = dict(defaults()["tls"], **tls) if isinstance(tls, dict) else defaults()["tls"]
    return {key: os.path.expanduser(tls[key]) if tls.get(key) else None for key in ("ca", "crl", "cert", "key")}


def config_source():
    """Where the policy came from (for doctor): the site file when present."""
    return SITE_FILE if os.path.lexists(SITE_FILE) else None
