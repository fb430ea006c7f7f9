"""Start a Dask cluster of Pumice workers on Slurm or LSF and keep it up until Ctrl-C.

    python start_cluster.py slurm 50     # 50 batch jobs, one worker each
    pumice downsample /shared/em --cluster tcp://<address printed here>

Settings come from dask-jobqueue's config (see jobqueue.yaml beside this file). Run it on a login
node (or in a long job) that the compute nodes can reach; keep it running while Pumice runs.
"""

from __future__ import annotations

import sys
import time


def make_cluster(kind: str):
    from dask_jobqueue import LSFCluster, SLURMCluster

    return {"slurm": SLURMCluster, "lsf": LSFCluster}[kind]()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("slurm", "lsf") or not argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    cluster = make_cluster(argv[0])
    cluster.scale(jobs=int(argv[1]))
    print(f"scheduler: {cluster.scheduler_address}  dashboard: {cluster.dashboard_link}")
    print(f"run: pumice <operation> ... --cluster {cluster.scheduler_address}   (Ctrl-C here stops the workers)")
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
