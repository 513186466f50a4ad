"""Prompt-learning host methods, one file each, registered by name."""

from lamm_plugin.methods.base import METHODS, PromptMethod, TextPrompt, VisualPrompt, register_method
from lamm_plugin.methods.cocoop import CoCoOp
from lamm_plugin.methods.coop import CoOp
from lamm_plugin.methods.kgcoop import KgCoOp
from lamm_plugin.methods.maple import MaPLe
from lamm_plugin.methods.promptsrc import PromptSRC
from lamm_plugin.methods.vpt import VPT
from lamm_plugin.methods.zeroshot import Zeroshot

__all__ = [
    "METHODS",
    "CoCoOp",
    "KgCoOp",
    "CoOp",
    "MaPLe",
    "PromptMethod",
    "PromptSRC",
    "TextPrompt",
    "VPT",
    "VisualPrompt",
    "Zeroshot",
    "register_method",
]
