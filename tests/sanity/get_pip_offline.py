# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for ansible-test's get-pip bootstrap script, for machines that reach PyPI but not
ci-files.testing.ansible.com: pip from the interpreter's own ensurepip, then the pip version
ansible-test asks for, from the package index (`make sanity` puts this file in ansible-test's cache)."""

import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
