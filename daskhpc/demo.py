"""A short burst demo: what `make lab` runs as a data scientist after converging the lab.

    python -m daskhpc.demo --workers 4
"""

from __future__ import annotations

import argparse
import getpass
import json
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run a small Dask computation on the burst partition.")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)

    import dask.array as da
    import numpy as np

    from daskhpc import BurstCluster

    started = time.monotonic()
    x = da.random.RandomState(42).random((4000, 4000), chunks=(500, 500))
    with BurstCluster(workers=args.workers) as cluster, cluster.get_client() as client:
        client.wait_for_workers(args.workers, timeout=300)
        ready = time.monotonic() - started
        result = float((x + x.T).mean().compute())
        # The same graph on this process alone: the cluster must give exactly the same answer.
        expected = float((x + x.T).mean().compute(scheduler="synchronous"))
        summary = {
            "user": getpass.getuser(),
            "workers": len(client.scheduler_info()["workers"]),
            "seconds_to_workers": round(ready, 1),
            "result": result,
            "same_as_local": bool(np.isclose(result, expected, rtol=1e-12, atol=0)),
            "scheduler": cluster.scheduler_address,
            "dashboard": cluster.dashboard_link,
            "job_ids": sorted(str(getattr(job, "job_id", "")) for job in cluster.workers.values()),
        }
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
