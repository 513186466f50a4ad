"""Zero-shot CLIP with a hand-crafted template: the untrained baseline row of the result tables."""

from __future__ import annotations

from collections.abc import Sequence

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.config import ZeroshotConfig
from lamm_plugin.methods.base import PromptMethod, register_method
from lamm_plugin.templates import dataset_template


@register_method
class Zeroshot(PromptMethod):
    """No learnable prompt: the template is ``cfg.template`` or the dataset's hand-crafted one."""

    name = "zeroshot"
    config_class = ZeroshotConfig

    def __init__(self, cfg: ZeroshotConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)

    def template(self) -> tuple[str, Sequence[int]]:
        return (self.cfg.template or dataset_template(self.cfg.dataset)), ()
