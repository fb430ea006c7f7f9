"""What Pumice does: one module per operation, each a planner plus its tasks.

Importing this package imports every module in it, which registers every operation's tasks, so a
worker can rebuild any task from its name: a new ``ops/<name>.py`` needs no list to join.
"""

import importlib
import pkgutil
import sys


def discover() -> None:
    """Import every module of this package not imported yet (their tasks register themselves)."""
    for module in pkgutil.iter_modules(__path__):
        if f"{__name__}.{module.name}" not in sys.modules:
            importlib.import_module(f"{__name__}.{module.name}")


discover()
