"""VPT baseline on CLIP (Jia et al., "Visual Prompt Tuning", ECCV 2022), as in MaPLe's repository.

Visual prompt tokens in CLIP's image tower, hand-crafted text prompt. The same core as ``LAMM_VPT`` with LAMM
disabled. Settings: ``TRAINER.VPT`` (``N_CTX_VISION``, ``PROMPT_DEPTH_VISION``, ``CTX_INIT``, ``PREC``).
"""

from lamm_plugin.dassl import PromptTrainer, register_trainer


class VPT(PromptTrainer):
    """Visual Prompt Tuning on CLIP, https://arxiv.org/abs/2203.12119."""

    METHOD = "vpt"
    NODE = "VPT"
    USE_LAMM = False


register_trainer(VPT)
