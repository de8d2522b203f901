"""Dask clusters on the burst partition: the cluster classes, their job-state sync and progress.

The job side (``daskhpc.worker``, ``daskhpc.worker_preload``) stays outside this package: the worker
jobs run it, and a worker job must not import the client's cluster code.
"""
