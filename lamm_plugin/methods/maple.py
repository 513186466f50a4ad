"""MaPLe: multi-modal prompt learning (Khattak et al., CVPR 2023).

Text prompts ``[SOS] ctx_1..ctx_n <rest of "a photo of a"> [CLASS] . [EOS]`` whose ``n`` context vectors are
projected into the image tower as visual prompts; in the first ``J`` layers both towers get fresh prompts,
the visual ones projected from the text ones (coupling).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.config import MaPLeConfig
from lamm_plugin.encoders import ImageEncoder
from lamm_plugin.methods.base import PromptMethod, TextPrompt, VisualPrompt, register_method, token_embeddings


@register_method
class MaPLe(PromptMethod):
    """MaPLe's multi-modal prompt learner."""

    name = "maple"
    config_class = MaPLeConfig

    def __init__(self, cfg: MaPLeConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        if cfg.prompt_depth < 1:
            raise ValueError("MaPLe needs prompt_depth >= 1 (1 is shallow MaPLe).")
        text_width = clip.model.token_embedding.weight.shape[1]
        image = ImageEncoder(clip.model)
        vision_width = image.width  # clear error on ResNet towers
        blocks = min(image.num_blocks, len(clip.model.transformer.resblocks))
        if cfg.prompt_depth > blocks:
            raise ValueError(f"prompt_depth={cfg.prompt_depth} exceeds the {blocks} transformer blocks of {clip.name}.")
        n_ctx = cfg.n_ctx
        init = cfg.ctx_init.replace("_", " ").strip()
        if init:
            vectors = token_embeddings(clip, init)
            if len(vectors) < n_ctx:
                raise ValueError(f"ctx_init {init!r} has {len(vectors)} tokens, fewer than n_ctx={n_ctx}.")
            self.prefix = init
            vectors = vectors[:n_ctx].clone()
        else:
            vectors = nn.init.normal_(torch.empty(n_ctx, text_width), std=0.02)
            self.prefix = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(vectors)
        self.proj = nn.Linear(text_width, vision_width)
        self.deep_text = nn.ParameterList(
            [
                nn.Parameter(nn.init.normal_(torch.empty(n_ctx, text_width), std=0.02))
                for _ in range(cfg.prompt_depth - 1)
            ]
        )
        if cfg.clone_deep_proj:  # the original code: copies of one initial layer
            first = nn.Linear(text_width, vision_width)
            self.deep_proj = nn.ModuleList([copy.deepcopy(first) for _ in self.deep_text])
        else:
            self.deep_proj = nn.ModuleList([nn.Linear(text_width, vision_width) for _ in self.deep_text])

    def template(self) -> tuple[str, Sequence[int]]:
        # The context vectors take the template's first n_ctx tokens.
        return self.prefix + " {}.", range(self.cfg.n_ctx)

    def text_prompt(self) -> TextPrompt:
        return TextPrompt(ctx=self.ctx, deep=list(self.deep_text), deep_start=1)

    def visual_prompt(self) -> VisualPrompt:
        return VisualPrompt(
            shallow=self.proj(self.ctx), deep=[proj(p) for proj, p in zip(self.deep_proj, self.deep_text)]
        )

    def text_is_trainable(self) -> bool:
        return True
