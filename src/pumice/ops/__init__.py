"""What Pumice does: one module per operation, each a planner plus its tasks.

Importing this package imports every module in it, which registers every operation's tasks, so a
worker can rebuild any task from its name: a new ``ops/<name>.py`` needs no list to join.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
