"""CoCoOp: conditional context optimisation (Zhou et al., "Conditional Prompt Learning for Vision-Language
Models", CVPR 2022).

CoOp's context vectors plus a bias that a small meta-network (``Linear -> ReLU -> Linear``) computes from each
image's L2-normalised feature: the prompt ``[SOS] ctx_1+b(x)..ctx_M+b(x) [CLASS] . [EOS]`` differs per image, so
the text features are ``[B, C, E]``. LAMM's label rows are spliced into every per-image prompt, and its reference
branch (original class-name embeddings) uses the same per-image context.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.methods.base import PromptMethod, TextPrompt, register_method


@dataclass
class CoCoOpConfig:
    """CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus a per-image bias from a small meta-network.

    Attributes:
        n_ctx: Number of context vectors (ignored when ``ctx_init`` is given: one per word).
        ctx_init: Words that initialise the context; empty for random init.
        meta_reduction: The meta-network's hidden width is the image-feature width divided by this (16 in the
            original code).
    """

    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    meta_reduction: int = 16

    def __post_init__(self) -> None:
        if self.meta_reduction < 1:
            raise ValueError(f"meta_reduction must be at least 1, got {self.meta_reduction}.")
        if self.n_ctx < 1 and not self.ctx_init.replace("_", " ").strip():
            raise ValueError(f"n_ctx must be at least 1 without ctx_init, got {self.n_ctx}.")


@register_method
class CoCoOp(PromptMethod):
    """CoCoOp's prompt learner: shared context vectors shifted by a per-image meta-network bias."""

    name = "cocoop"
    display_name = "CoCoOp"
    config_class = CoCoOpConfig
    image_conditioned = True

    def __init__(self, cfg: CoCoOpConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        width = clip.text_width
        vis_dim = clip.embed_dim
        hidden = vis_dim // cfg.meta_reduction
        if hidden < 1:
            raise ValueError(f"meta_reduction={cfg.meta_reduction} leaves no hidden unit for {vis_dim}-d features.")
        init = cfg.ctx_init.replace("_", " ").strip()
        if init:
            vectors = clip.token_embeddings(init)  # [n_ctx, width]
            self.prefix = init
        else:
            vectors = nn.init.normal_(torch.empty(cfg.n_ctx, width), std=0.02)
            self.prefix = " ".join(["X"] * cfg.n_ctx)
        self.n_ctx = vectors.shape[0]
        self.ctx = nn.Parameter(vectors)
        self.meta_net = nn.Sequential(
            OrderedDict(
                [("linear1", nn.Linear(vis_dim, hidden)), ("relu", nn.ReLU()), ("linear2", nn.Linear(hidden, width))]
            )
        )

    def template(self) -> tuple[str, Sequence[int]]:
        return self.prefix + " {}.", range(self.n_ctx)

    def text_prompt(self) -> TextPrompt:
        return TextPrompt()  # the context goes in per image (image_context)

    def image_context(self, image_features: torch.Tensor) -> torch.Tensor:
        bias = self.meta_net(image_features.to(self.ctx.dtype))  # [B, width]
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)  # [B, n_ctx, width]

    def text_is_trainable(self) -> bool:
        return True
