"""promtool for the tests: Debian's, the version the lab's Prometheus runs.

When it is not on PATH, Debian's prometheus package is downloaded with apt and only unpacked into
~/.cache/daskhpc/prometheus-deb: installing it would start a Prometheus on this machine.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "daskhpc" / "prometheus-deb"


@functools.cache
def find_promtool():
    """promtool on PATH, or from Debian's prometheus package unpacked (not installed) into CACHE."""
    found = shutil.which("promtool") or CACHE / "usr" / "bin" / "promtool"
    if Path(found).exists():
        return str(found)
    download = CACHE.with_name(CACHE.name + ".download")
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    os.chmod(download, 0o755)  # apt's _apt user writes the download here
    fetched = subprocess.run(["apt-get", "download", "prometheus"], cwd=download, capture_output=True, text=True,
                             check=False, timeout=600)
    debs = list(download.glob("prometheus_*.deb"))
    assert debs, "apt-get download prometheus failed (Debian's promtool is needed):\n" + fetched.stderr[-2000:]
    unpacked = CACHE.with_name(CACHE.name + ".new")
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True)
    shutil.rmtree(CACHE, ignore_errors=True)
    unpacked.rename(CACHE)
    shutil.rmtree(download, ignore_errors=True)
    return str(CACHE / "usr" / "bin" / "promtool")
