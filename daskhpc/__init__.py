"""daskhpc: policy-safe, preemption-proof Dask clusters on an on-prem HPC burst partition.

    from daskhpc import BurstCluster

Names are imported lazily so that ``daskhpc`` subcommands (audit, exporter)
do not pay for importing Dask.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers and linters only; at run time __getattr__ imports on first use
    from daskhpc.cluster.base import BurstCluster, BurstClusterBase, PolicyError
    from daskhpc.cluster.pbs import PBSBurstCluster
    from daskhpc.cluster.slurm import SlurmBurstCluster
    from daskhpc.config import NotConfigured
    from daskhpc.named import clusters, connect

_LAZY = {
    "BurstCluster": "daskhpc.cluster.base",
    "BurstClusterBase": "daskhpc.cluster.base",
    "SlurmBurstCluster": "daskhpc.cluster.slurm",
    "PBSBurstCluster": "daskhpc.cluster.pbs",
    "PolicyError": "daskhpc.cluster.base",
    "NotConfigured": "daskhpc.config",
    "connect": "daskhpc.named",
    "clusters": "daskhpc.named",
}

__all__ = ["BurstCluster", "BurstClusterBase", "NotConfigured", "PBSBurstCluster", "PolicyError", "SlurmBurstCluster",
           "clusters", "connect"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError("module 'daskhpc' has no attribute %r" % name)
