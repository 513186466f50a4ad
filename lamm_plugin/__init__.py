"""LAMM: label alignment for multi-modal prompt learning (Gao et al., AAAI 2024, arXiv 2312.08212).

The core is pure PyTorch + open_clip; the Dassl adapter lives in :mod:`lamm_plugin.dassl` and is imported only
by Dassl users (``import lamm_plugin.dassl``).
"""

from lamm_plugin.backbone import CLIPBundle, load_clip
from lamm_plugin.config import LAMMConfig, official_preset
from lamm_plugin.encoders import ImageEncoder, TextEncoder
from lamm_plugin.label_embedding import LabelEmbedding
from lamm_plugin.lamm import LAMM, LAMMOutput, build_model
from lamm_plugin.losses import HierarchicalLoss
from lamm_plugin.methods import METHODS, PromptMethod, register_method
from lamm_plugin.tokens import PromptLayout, build_layout

__version__ = "0.1.0"

#: Every registered method's config dataclass under its own name (``CoOpConfig``, ``MaPLeConfig``, ...).
_METHOD_CONFIGS = {cls.config_class.__name__: cls.config_class for cls in METHODS.values()}
globals().update(_METHOD_CONFIGS)

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
    "ImageEncoder",
    "LAMMConfig",
    "PromptLayout",
    "TextEncoder",
    "build_layout",
    "load_clip",
    "official_preset",
    *sorted(_METHOD_CONFIGS),
]
