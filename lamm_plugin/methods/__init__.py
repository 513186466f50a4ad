"""Prompt-learning host methods, one file each, registered by name.

Importing this package imports every module in it, so a method file placed here is registered without an edit
anywhere else; its class and its config dataclass are then importable from here under their own names.
"""

import importlib
import pkgutil

from lamm_plugin.methods.base import METHODS, PromptMethod, StepFeatures, TextPrompt, VisualPrompt, register_method

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

#: Every registered method class and config dataclass by its name (``CoOp``, ``CoOpConfig``, ...).
PUBLIC: dict[str, type] = {}
for _cls in METHODS.values():
    PUBLIC[_cls.__name__] = _cls
    PUBLIC[_cls.config_class.__name__] = _cls.config_class
globals().update(PUBLIC)

__all__ = ["METHODS", "PUBLIC", "PromptMethod", "StepFeatures", "TextPrompt", "VisualPrompt", "register_method"]
__all__ += sorted(PUBLIC)
