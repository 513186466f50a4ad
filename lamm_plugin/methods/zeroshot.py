"""Zero-shot CLIP with a hand-crafted template: the untrained baseline row of the result tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lamm_plugin.methods.base import PromptMethod, register_method
from lamm_plugin.templates import dataset_template


@dataclass
class ZeroshotConfig:
    """Zero-shot CLIP with a hand-crafted template (no training).

    Attributes:
        template: Prompt template with ``{}``; empty picks the dataset's CoOp template (see ``templates.py``).
        dataset: Dataset name used to pick the template when ``template`` is empty.
    """

    template: str = ""
    dataset: str = ""


@register_method
class Zeroshot(PromptMethod):
    """No learnable prompt: the template is ``cfg.template`` or the dataset's hand-crafted one."""

    name = "zeroshot"
    display_name = "ZeroshotCLIP"
    config_class = ZeroshotConfig
    lamm_variant = False  # the LAMM trainers start from a learnable host; LAMM alone is LAMM_CoOp, frozen context

    def template(self) -> tuple[str, Sequence[int]]:
        return (self.cfg.template or dataset_template(self.cfg.dataset)), ()
