"""LAMM: label alignment for multi-modal prompt learning (Gao et al., AAAI 2024, arXiv 2312.08212).

The core is pure PyTorch + open_clip; the Dassl adapter lives in :mod:`lamm_plugin.dassl` and is imported only
by Dassl users (``import lamm_plugin.dassl``). The public names below are resolved on first use (PEP 562), so
that the standard-library modules (:mod:`lamm_plugin.layout`) and the experiment package that reads run folders
import without torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
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
    "CoOpConfig": "lamm_plugin.config",
    "LAMMConfig": "lamm_plugin.config",
    "MaPLeConfig": "lamm_plugin.config",
    "PromptSRCConfig": "lamm_plugin.config",
    "VPTConfig": "lamm_plugin.config",
    "ZeroshotConfig": "lamm_plugin.config",
    "official_preset": "lamm_plugin.config",
}

__all__ = [
    "LAMM",
    "METHODS",
    "CLIPBundle",
    "HierarchicalLoss",
    "LAMMOutput",
    "LabelEmbedding",
    "PromptMethod",
    "build_model",
    "register_method",
    "CoOpConfig",
    "ImageEncoder",
    "LAMMConfig",
    "MaPLeConfig",
    "PromptLayout",
    "PromptSRCConfig",
    "TextEncoder",
    "VPTConfig",
    "ZeroshotConfig",
    "build_layout",
    "load_clip",
    "official_preset",
]

if TYPE_CHECKING:
    from lamm_plugin.backbone import CLIPBundle, load_clip
    from lamm_plugin.config import (
        CoOpConfig,
        LAMMConfig,
        MaPLeConfig,
        PromptSRCConfig,
        VPTConfig,
        ZeroshotConfig,
        official_preset,
    )
    from lamm_plugin.encoders import ImageEncoder, TextEncoder
    from lamm_plugin.label_embedding import LabelEmbedding
    from lamm_plugin.lamm import LAMM, LAMMOutput, build_model
    from lamm_plugin.losses import HierarchicalLoss
    from lamm_plugin.methods import METHODS, PromptMethod, register_method
    from lamm_plugin.tokens import PromptLayout, build_layout


def __getattr__(name: str) -> Any:
    """Import the module defining a public name on first access and cache the name in this package.

    A submodule (``lamm_plugin.methods``) is imported too when reached as an attribute, as it was when this
    package imported its modules eagerly.
    """
    module = _EXPORTS.get(name)
    if module is None:
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
