"""Import ``lamm_plugin.sweep`` / ``lamm_plugin.tables`` without ``lamm_plugin/__init__.py``.

Those modules need only the standard library, while the package's ``__init__`` imports torch and open_clip
(seconds per process): the sweep and table scripts start many short processes, so they import the two modules
through a bare package entry. A process that later imports the full package gets a fresh one.
"""

import importlib
import os
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def light_import(name: str) -> types.ModuleType:
    """``lamm_plugin.<name>`` from this checkout, without running the package's ``__init__``."""
    if "lamm_plugin" not in sys.modules:
        package = types.ModuleType("lamm_plugin")
        package.__path__ = [os.path.join(REPO, "lamm_plugin")]
        sys.modules["lamm_plugin"] = package
        try:
            return importlib.import_module(f"lamm_plugin.{name}")
        finally:
            # later `import lamm_plugin` (e.g. by a trainer in this process) runs the real __init__
            del sys.modules["lamm_plugin"]
    return importlib.import_module(f"lamm_plugin.{name}")
