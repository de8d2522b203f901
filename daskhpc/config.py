"""The site's client configuration, read through Dask's own configuration system.

The ``dask_client`` role writes ``/etc/dask/daskhpc.yaml`` (top key ``daskhpc``)
from the site model; Dask reads ``/etc/dask`` by itself, so ``dask config get
daskhpc`` shows exactly what ``BurstCluster`` uses. The package's defaults
(``daskhpc/daskhpc.yaml``) fill in whatever the site file leaves out.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("daskhpc.yaml")
SITE_FILE = "/etc/dask/daskhpc.yaml"


def defaults():
    """The package's own defaults for the ``daskhpc`` section."""
    with open(DEFAULTS_FILE, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["daskhpc"]


def _register_defaults():
    dask.config.update_defaults({"daskhpc": defaults()})


_register_defaults()


class NotConfigured(RuntimeError):
    """The site's client configuration is missing or incomplete."""


def site_config():
    """The ``daskhpc`` configuration section as a plain dict."""
    return dict(dask.config.get("daskhpc"))


def get(key, default=None):
    return dask.config.get("daskhpc." + key, default=default)


def contact(config=None):
    config = site_config() if config is None else config
    return config.get("contact") or "your HPC support team"


def require_site(config=None):
    """Return the configuration, or raise NotConfigured saying what is missing and how to fix it."""
    config = site_config() if config is None else config
    missing = [key for key in ("site", "partition", "qos", "account") if not config.get(key)]
    if missing:
        raise NotConfigured(
            "daskhpc is not configured on this machine (missing %s in Dask config section 'daskhpc'). "
            "Fix: ask %s to run the onprem.daskhpc.dask_client role here (it writes %s), "
            "and check with `daskhpc doctor`." % (", ".join(missing), contact(config), SITE_FILE))
    return config


def tls_mode(config=None):
    """``required`` or ``optional``. The site file may carry either a bare mode or a mapping with ``mode``."""
    config = site_config() if config is None else config
    tls = config.get("tls")
    if isinstance(tls, str):
        return tls
    return (tls or {}).get("mode") or "optional"


def tls_paths(config=None):
    """Expanded paths of the user's TLS credential: dict with ``ca``, ``cert``, ``key``."""
    config = site_config() if config is None else config
    tls = config.get("tls")
    defaults = dask.config.get("daskhpc.tls") if isinstance(dask.config.get("daskhpc.tls"), dict) else {}
    tls = tls if isinstance(tls, dict) else {}
    paths = {}
    for key in ("ca", "cert", "key"):
        value = tls.get(key) or defaults.get(key)
        paths[key] = os.path.expanduser(os.path.expandvars(value)) if value else None
    return paths


def config_source():
    """Which file set the site configuration (for doctor): the site file when present."""
    for directory in dask.config.paths:
        candidate = Path(directory) / "daskhpc.yaml"
        if candidate.is_file():
            return str(candidate)
    return None
