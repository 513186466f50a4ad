"""PromptSRC baseline (Khattak et al., "Self-regulating Prompts: Foundational Model Adaptation without
Forgetting", ICCV 2023).

The same core as ``LAMM_PromptSRC`` with LAMM disabled: independent deep text and visual prompts, mutual agreement
with frozen CLIP (``src_text``, ``src_image``, ``src_logit``) and Gaussian prompt aggregation over epochs. Settings:
``TRAINER.PROMPTSRC`` (``N_CTX_TEXT``, ``N_CTX_VISION``, ``CTX_INIT``, ``PROMPT_DEPTH_TEXT``,
``PROMPT_DEPTH_VISION``, ``TEXT_LOSS_WEIGHT``, ``IMAGE_LOSS_WEIGHT``, ``GPA_MEAN``, ``GPA_STD``, ``PREC``), the keys
of PromptSRC's own configs.
"""

from lamm_plugin.dassl import PromptTrainer, register_trainer


class PromptSRC(PromptTrainer):
    """Prompting with Self-regulating Constraints (PromptSRC), https://arxiv.org/abs/2307.06948."""

    METHOD = "promptsrc"
    NODE = "PROMPTSRC"
    USE_LAMM = False


register_trainer(PromptSRC)
