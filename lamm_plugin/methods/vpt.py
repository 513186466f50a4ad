"""VPT: visual prompt tuning (Jia et al., ECCV 2022) on CLIP's image tower.

Learnable tokens are appended to the image tokens (shallow), and replaced by fresh ones at the input of each of
the first ``prompt_depth_vision`` blocks (deep). The text prompt is hand-crafted and fixed, so LAMM's label
embeddings are the only text-side parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from lamm_plugin.backbone import CLIPBundle, draw_inside_clip_build
from lamm_plugin.methods.base import PROMPT_INIT_STD, PromptMethod, VisualPrompt, register_method


@dataclass
class VPTConfig:
    """VPT (Jia et al., ECCV 2022) on CLIP's image tower, with a hand-crafted text prompt.

    Attributes:
        n_ctx_vision: Number of visual prompt tokens.
        prompt_depth_vision: Number of layers with visual prompts; 1 is shallow VPT.
        ctx_init: Words in front of the class name in the (frozen) text prompt.
    """

    n_ctx_vision: int = 8
    prompt_depth_vision: int = 1
    ctx_init: str = "a photo of a"

    def __post_init__(self) -> None:
        if self.prompt_depth_vision < 1:
            raise ValueError("VPT needs prompt_depth_vision >= 1 (1 is shallow VPT).")
        if self.n_ctx_vision < 1:
            raise ValueError(f"VPT needs n_ctx_vision >= 1, got {self.n_ctx_vision}.")


@register_method
class VPT(PromptMethod):
    """Shallow or deep visual prompts with the text prompt ``"<ctx_init> {}."``."""

    name = "vpt"
    display_name = "VPT"
    config_class = VPTConfig
    prompts_image_tower = True
    fp32_in_fp16_runs = ("shallow", "deep")  # the original VPT code builds all of CLIP in fp32 whatever PREC says

    def __init__(self, cfg: VPTConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        _ = clip.vision_width  # clear error on ResNet towers
        if cfg.prompt_depth_vision > clip.image_blocks:
            raise ValueError(
                f"prompt_depth_vision={cfg.prompt_depth_vision} exceeds the {clip.image_blocks} blocks of {clip.name}."
            )

        # Drawn where MaPLe's repository's VPT draws them: inside CLIP's construction.
        drawn = draw_inside_clip_build(clip, (cfg.n_ctx_vision, cfg.prompt_depth_vision), (0, 0), PROMPT_INIT_STD)
        self.shallow = nn.Parameter(drawn["vision"][0])
        self.deep = nn.ParameterList([nn.Parameter(t) for t in drawn["vision"][1:]])

    def template(self) -> tuple[str, Sequence[int]]:
        prefix = self.cfg.ctx_init.replace("_", " ").strip()
        return (prefix + " {}." if prefix else "{}."), ()

    def visual_prompt(self) -> VisualPrompt:
        return VisualPrompt(shallow=self.shallow, deep=list(self.deep))
