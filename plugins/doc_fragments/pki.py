# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that sign with the issuing CA."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  ca_dir:
    description: Directory of the CA created by M(onprem.daskhpc.ca) (the site model's C(ca.dir)).
    type: path
    required: true
  ca_passphrase:
    description: The CA passphrase that decrypts the issuing key. Keep it in a vault.
    type: str
    required: true
  requested_by:
    description: Who asked for this, recorded in the ledger. Defaults to the user running the module
      (C(SUDO_USER) when set).
    type: str
"""
