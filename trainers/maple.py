"""MaPLe baseline (Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023).

The same core as ``LAMM_MaPLe`` with LAMM disabled. Settings: ``TRAINER.MAPLE`` (``N_CTX``, ``CTX_INIT``,
``PROMPT_DEPTH``, ``PREC``), the keys of MaPLe's own configs.
"""

from lamm_plugin.dassl import PromptTrainer, register_trainer


class MaPLe(PromptTrainer):
    """Multi-modal Prompt Learning (MaPLe), https://arxiv.org/abs/2210.03117."""

    METHOD = "maple"
    NODE = "MAPLE"
    USE_LAMM = False


register_trainer(MaPLe)
