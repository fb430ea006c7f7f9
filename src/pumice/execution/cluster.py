"""The Dask runner: a plan's stages on a dask.distributed cluster.

The same loop as the local runner (``local.run_on``), with a Dask client's executor in place of
the process pool: tasks go out lazily with a bounded number in flight, failures are retried the
same way, and each worker records its finished tasks in the ledger itself, so a run stopped at any
moment resumes with any runner. ``local:N`` starts a LocalCluster of N single-threaded worker
processes on this machine; anything else is a running scheduler's address.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..errors import PumiceError
from ..plan import Plan
from . import local

CONNECT_SECONDS = 20.0  # to reach a scheduler, and for a first worker to join it
IN_FLIGHT_PER_WORKER = 16


def run(plan: Plan, address: str, *, progress: bool = True, restart: bool = False,
        say: Callable[[str], None] = print) -> local.RunReport:
    if local.uses_memory_store(plan):
        raise PumiceError("memory:// data lives inside one process, which Dask workers cannot see; "
                          "use a path, file://, gs:// or s3:// URL with --cluster")
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its start-up chatter is not the user's business
    cluster = None
    if address.startswith("local:"):
        count = address.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise PumiceError(f"--cluster local:N needs a number of workers, got {address!r} (e.g. local:4)")
        cluster = LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True,
                               dashboard_address="127.0.0.1:8787", silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError, ValueError) as e:
            raise PumiceError(f"cannot reach a Dask scheduler at {address} ({type(e).__name__}); start one with "
                              f"`dask scheduler` and workers with `dask worker {address}`, or use --cluster local:N") from None
    try:
        if not client.nthreads():
            say(f"waiting up to {CONNECT_SECONDS:.0f} s for a Dask worker to join {address}")
            try:
                client.wait_for_workers(1, timeout=CONNECT_SECONDS)
            except TimeoutError:
                raise PumiceError(f"no Dask worker joined the scheduler at {address}; start some with "
                                  f"`dask worker {address}` (see docs/clusters.md)") from None
        workers = sum(client.nthreads().values())
        services = client.scheduler_info().get("services", {})
        dashboard = f", dashboard {client.dashboard_link}" if "dashboard" in services else ""
        say(f"running on Dask at {client.scheduler.address}: {workers} worker thread(s){dashboard}")
        client.run(local.limit_malloc_arenas)
        # More in flight than locally: each task's round trip through the scheduler takes milliseconds,
        # which a deeper queue per worker hides (still bounded: a million-task plan is never all submitted).
        return local.run_on(plan, client.get_executor(pure=False), workers, progress=progress, restart=restart,
                            in_flight=IN_FLIGHT_PER_WORKER)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
