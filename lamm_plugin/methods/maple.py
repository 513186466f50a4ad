"""MaPLe: multi-modal prompt learning (Khattak et al., CVPR 2023).

Text prompts ``[SOS] ctx_1..ctx_n <rest of "a photo of a"> [CLASS] . [EOS]`` whose ``n`` context vectors are
projected into the image tower as visual prompts; in the first ``J`` layers both towers get fresh prompts,
the visual ones projected from the text ones (coupling).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.methods.base import (
    PromptMethod,
    TextPrompt,
    VisualPrompt,
    initial_context,
    random_tokens,
    register_method,
)


@dataclass
class MaPLeConfig:
    """MaPLe (Khattak et al., CVPR 2023): coupled text and vision prompts in the first ``prompt_depth`` layers.

    Attributes:
        n_ctx: Number of prompt tokens per layer and branch.
        ctx_init: Template words; the first ``n_ctx`` of its tokens are learnable (MaPLe's "a photo of a").
        prompt_depth: Number of layers with prompts (J); 1 is shallow MaPLe.
        clone_deep_proj: Start every deep projection from copies of one randomly initialised layer, as the
            original MaPLe code does; ``False`` initialises each independently.
        checkpoint_image: Recompute the image blocks' activations in the backward pass instead of keeping them
            (exact: the same gradients; less memory, about one more image-tower forward per step). Off by default:
            MaPLe's step fits in a few GB without it (docs/DESIGN.md), and no GPU measurement has shown it pays.
    """

    n_ctx: int = 2
    ctx_init: str = "a photo of a"
    prompt_depth: int = 9
    clone_deep_proj: bool = False
    checkpoint_image: bool = False

    def __post_init__(self) -> None:
        if self.prompt_depth < 1:
            raise ValueError("MaPLe needs prompt_depth >= 1 (1 is shallow MaPLe).")
        if self.n_ctx < 1:
            raise ValueError(f"MaPLe needs n_ctx >= 1, got {self.n_ctx}.")


@register_method
class MaPLe(PromptMethod):
    """MaPLe's multi-modal prompt learner."""

    name = "maple"
    display_name = "MaPLe"
    config_class = MaPLeConfig
    prompts_image_tower = True
    # The original makes ctx in CLIP's dtype and halves proj, but makes the deep prompts and projections in fp32.
    fp32_in_fp16_runs = ("deep_text", "deep_proj")

    def __init__(self, cfg: MaPLeConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        text_width = clip.text_width
        vision_width = clip.vision_width  # clear error on ResNet towers
        blocks = min(clip.image_blocks, clip.text_blocks)
        if cfg.prompt_depth > blocks:
            raise ValueError(f"prompt_depth={cfg.prompt_depth} exceeds the {blocks} transformer blocks of {clip.name}.")
        n_ctx = cfg.n_ctx
        vectors, self.prefix = initial_context(clip, cfg.ctx_init, n_ctx)
        self.ctx = nn.Parameter(vectors)
        self.proj = nn.Linear(text_width, vision_width)
        self.deep_text = nn.ParameterList([random_tokens(n_ctx, text_width) for _ in range(cfg.prompt_depth - 1)])
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
