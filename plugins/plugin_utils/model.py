# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection's filters get the validated site model.

playbooks/validate.yml validates ``daskhpc_site`` once and publishes the result as the fact
``daskhpc_model`` on every host; filters take that fact. Each site-model filter goes through
`model_of`, so none carries its own copy of the validation glue.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.daskhpc.plugins.module_utils._core import site_model

# Keys only a validated model has: validation refuses them in a site file.
_DERIVED_KEYS = ("total_cores", "burst_partitions", "production_partitions")


def model_of(value, scheduler=None):
    """The validated model in `value`: the published ``daskhpc_model`` (used as it is) or a raw site model.

    A raw ``daskhpc_site`` is validated here, so a caller that skipped playbooks/validate.yml still
    gets every refusal; roles and playbooks pass ``daskhpc_model``. AnsibleFilterError on a bad model,
    or when `scheduler` is given and the model is for another one.
    """
    if isinstance(value, Mapping) and all(key in value for key in _DERIVED_KEYS):
        model = value
    else:
        try:
            model = site_model.validate(value)
        except site_model.SiteModelError as exc:
            raise AnsibleFilterError(str(exc)) from exc
    if scheduler is not None and model["scheduler"] != scheduler:
        raise AnsibleFilterError("daskhpc_site.scheduler is %r, not %s. Fix: set scheduler: %s to build a %s site, "
                                 "or do not run this role"
                                 % (model["scheduler"], scheduler, scheduler, scheduler.upper()))
    return model


def view(func, value, *args, **kwargs):
    """func(model_of(value), ...), its ValueError an AnsibleFilterError."""
    try:
        return func(model_of(value), *args, **kwargs)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc
