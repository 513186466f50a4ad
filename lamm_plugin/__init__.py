"""LAMM: label alignment for multi-modal prompt learning (Gao et al., AAAI 2024, arXiv 2312.08212).

The core is pure PyTorch + open_clip; the Dassl adapter lives in :mod:`lamm_plugin.dassl` and is imported only
by Dassl users (``import lamm_plugin.dassl``). The public names below are resolved on first use (PEP 562), so
that the standard-library modules (:mod:`lamm_plugin.layout`) and the experiment package that reads run folders
import without torch. Every registered method's config dataclass (``CoOpConfig``, ``MaPLeConfig``, ...) is one of
them, found through the method registry.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (the method configs come from the registry, see ``__getattr__``).
_EXPORTS = {
    "LAMM": "lamm_plugin.lamm",
    "LAMMOutput": "lamm_plugin.lamm",
    "build_model": "lamm_plugin.lamm",
    "METHODS": "lamm_plugin.methods",
    "PromptMethod": "lamm_plugin.methods",
    "register_method": "lamm_plugin.methods",
    "CLIPBundle": "lamm_plugin.backbone",
    "load_clip": "lamm_plugin.backbone",
    "HierarchicalLoss": "lamm_plugin.losses",
    "LabelEmbedding": "lamm_plugin.label_embedding",
    "ImageEncoder": "lamm_plugin.encoders",
    "TextEncoder": "lamm_plugin.encoders",
    "PromptLayout": "lamm_plugin.tokens",
    "build_layout": "lamm_plugin.tokens",
    "LAMMConfig": "lamm_plugin.config",
    "official_preset": "lamm_plugin.config",
    "Prediction": "lamm_plugin.predict",
    "Predictor": "lamm_plugin.predict",
}


def _method_configs() -> dict[str, type]:
    """Every registered method's config dataclass by its class name (imports the methods)."""
    from lamm_plugin.methods import METHODS

    return {cls.config_class.__name__: cls.config_class for cls in METHODS.values()}


def __getattr__(name: str) -> Any:
    """Import the module defining a public name on first access and cache the name in this package.

    ``__all__`` (for ``from lamm_plugin import *``) lists the fixed names and the registered method configs. A
    submodule (``lamm_plugin.methods``) is imported too when reached as an attribute, as it was when this package
    imported its modules eagerly.
    """
    if name == "__all__":
        value: Any = sorted(_EXPORTS) + sorted(_method_configs())
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name.endswith("Config") and name in _method_configs():
        value = _method_configs()[name]
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
