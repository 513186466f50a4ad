"""VPT: visual prompt tuning (Jia et al., ECCV 2022) on CLIP's image tower.

Learnable tokens are appended to the image tokens (shallow), and replaced by fresh ones at the input of each of
the first ``prompt_depth_vision`` blocks (deep). The text prompt is hand-crafted and fixed, so LAMM's label
embeddings are the only text-side parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.config import VPTConfig
from lamm_plugin.encoders import ImageEncoder
from lamm_plugin.methods.base import PromptMethod, VisualPrompt, register_method


@register_method
class VPT(PromptMethod):
    """Shallow or deep visual prompts with the text prompt ``"<ctx_init> {}."``."""

    name = "vpt"
    config_class = VPTConfig

    def __init__(self, cfg: VPTConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        if cfg.prompt_depth_vision < 1:
            raise ValueError("VPT needs prompt_depth_vision >= 1 (1 is shallow VPT).")
        image = ImageEncoder(clip.model)
        width = image.width  # clear error on ResNet towers
        if cfg.prompt_depth_vision > image.num_blocks:
            raise ValueError(
                f"prompt_depth_vision={cfg.prompt_depth_vision} exceeds the {image.num_blocks} blocks of {clip.name}."
            )

        def tokens() -> nn.Parameter:
            return nn.Parameter(nn.init.normal_(torch.empty(cfg.n_ctx_vision, width), std=0.02))

        self.shallow = tokens()
        self.deep = nn.ParameterList([tokens() for _ in range(cfg.prompt_depth_vision - 1)])

    def template(self) -> tuple[str, Sequence[int]]:
        prefix = self.cfg.ctx_init.replace("_", " ").strip()
        return (prefix + " {}." if prefix else "{}."), ()

    def visual_prompt(self) -> VisualPrompt:
        return VisualPrompt(shallow=self.shallow, deep=list(self.deep))
