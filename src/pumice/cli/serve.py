"""pumice serve cleave --edges FILE --mapping FILE"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..errors import PumiceError
from ..storage import urls
from .common import add_actions, note


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP services for proofreading (cleave)",
                       description="Long-running HTTP services. `pumice serve cleave` answers neu3/NeuTu's cleave "
                       "requests (POST /compute-cleave) from an edge table and a supervoxel -> body mapping.")
    actions = add_actions(p)
    c = actions.add_parser("cleave", help="the cleave protocol (seeded-mst, echo-seeds) on an edge table",
                           description="Serve POST /compute-cleave (neuclease's cleave protocol, as neu3 calls it), "
                           "GET /health and OPTIONS. A body's supervoxels and internal edges come from --mapping and "
                           "--edges (`pumice edges` output: its merge-table CSV, a Parquet file or its folder).")
    c.add_argument("--edges", required=True, metavar="FILE", help="merge-table CSV (id_a,id_b,...,score) or Parquet")
    c.add_argument("--mapping", required=True, metavar="FILE",
                   help="supervoxel -> body: CSV, .npy, DVID's `sv body` text or binary")
    c.add_argument("--port", type=int, default=5555, help="port (default 5555; 0: any free port)")
    c.add_argument("--bind", default="127.0.0.1", metavar="ADDR", help="address (default 127.0.0.1: this machine only)")
    c.add_argument("--mapping-changes", metavar="FILE",
                   help="accept POST /apply-cleave, which gives a cleaved label a new body id and rewrites the whole "
                   "mapping to FILE (.csv or .npy) for `pumice label-index/remap/mesh --mapping FILE`")
    c.set_defaults(func=run_cleave)


def run_cleave(args: argparse.Namespace) -> int:
    from ..ops.remap import read_mapping
    from ..serve.cleave import CleaveIndex, CleaveServer, read_edge_table

    changes = None
    if args.mapping_changes:
        local = urls.local_path(urls.normalize(args.mapping_changes))
        if local is None:
            raise PumiceError("--mapping-changes writes a local file; give a path on this machine")
        if not local.parent.is_dir():
            raise PumiceError(f"--mapping-changes {args.mapping_changes}: no folder {local.parent}")
        changes = Path(local)
    svs, bodies = read_mapping(args.mapping)
    a, b, score = read_edge_table(args.edges)
    index = CleaveIndex(svs, bodies, a, b, score)
    try:
        server = CleaveServer(index, args.bind, args.port, changes)
    except OSError as e:
        raise PumiceError(f"cannot listen on {args.bind}:{args.port} ({e.strerror or e}); choose another --port") from None
    host, port = server.server_address[:2]
    stats = index.stats()
    note(f"cleave server on http://{host}:{port} ({stats['bodies']:,} bodies, {stats['supervoxels']:,} supervoxels, "
         f"{stats['edges_within_bodies']:,} edges within bodies); Ctrl-C stops")
    print(f"http://{host}:{port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("stopped", file=sys.stderr)
    return 0
