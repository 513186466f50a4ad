"""IVLP: independent vision-language prompting, the baseline of MaPLe (Khattak et al., "MaPLe: Multi-modal Prompt
Learning", CVPR 2023; ``trainers/independentVL.py`` of its repository).

Deep text prompts in the first ``prompt_depth_text`` blocks of the text tower and deep visual prompts in the first
``prompt_depth_vision`` blocks of the image tower, learned independently (nothing couples the towers, unlike
MaPLe), trained on cross-entropy alone. These are PromptSRC's prompts (:class:`IndependentPrompts`) without its
self-regularisation and prompt aggregation.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamm_plugin.methods.base import register_method
from lamm_plugin.methods.promptsrc import IndependentPrompts


@dataclass
class IVLPConfig:
    """IVLP's settings (the defaults of ``TRAINER.IVLP`` in MaPLe's repository).

    Attributes:
        n_ctx_text: Text prompt tokens per block; the first ``n_ctx_text`` tokens of ``ctx_init`` start them.
        n_ctx_vision: Visual prompt tokens per block.
        ctx_init: Template words whose first ``n_ctx_text`` tokens are learnable; empty for random init.
        prompt_depth_text: Blocks with text prompts (1 = shallow).
        prompt_depth_vision: Blocks with visual prompts (1 = shallow).
    """

    n_ctx_text: int = 2
    n_ctx_vision: int = 2
    ctx_init: str = "a photo of a"
    prompt_depth_text: int = 9
    prompt_depth_vision: int = 9

    def __post_init__(self) -> None:
        if self.prompt_depth_text < 1 or self.prompt_depth_vision < 1:
            raise ValueError("IVLP needs prompt_depth_text >= 1 and prompt_depth_vision >= 1 (1 = shallow).")
        if self.n_ctx_text < 1 or self.n_ctx_vision < 1:
            raise ValueError("IVLP needs n_ctx_text >= 1 and n_ctx_vision >= 1.")


@register_method
class IVLP(IndependentPrompts):
    """Independent deep text and visual prompts, cross-entropy only."""

    name = "ivlp"
    display_name = "IVLP"
    config_class = IVLPConfig
