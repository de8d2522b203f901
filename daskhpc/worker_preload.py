"""Preload for Dask worker and nanny processes: accept only the cluster owner's certificate.

``dask worker ... --preload daskhpc.worker_preload --preload-nanny daskhpc.worker_preload``

Imported while the worker (or nanny) is being constructed, before it listens or
connects, it binds every TLS context of the process to the user running it, who on a
batch system is the user who submitted the job, i.e. the cluster's owner. There is no
setting to name another owner: a worker only ever trusts its own user.
"""

from __future__ import annotations

from daskhpc.security import install_process_binding

OWNER = install_process_binding()


def dask_setup(server):
    """Nothing left to do at start-up; the binding happened at import. Logged for the job's output."""
    server.daskhpc_tls_owner = OWNER
