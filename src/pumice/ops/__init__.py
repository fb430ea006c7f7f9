"""What Pumice does: one module per operation, each a planner plus its tasks.

Importing this package registers every operation's tasks, so a worker can rebuild any task.
"""

from . import contrast, delete, downsample, ingest, mesh, probe, quantize, skeleton, transfer  # noqa: F401
