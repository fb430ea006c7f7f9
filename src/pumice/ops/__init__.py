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
        name = f"{__name__}.{module.name}"
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            # A module removed between listing and import (a test's throwaway operation, a
            # deploy replacing files) has no tasks to register; a missing dependency still raises.
            if error.name != name:
                raise


discover()
