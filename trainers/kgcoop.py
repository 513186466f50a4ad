"""KgCoOp baseline (Yao et al., "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization",
CVPR 2023).

The same core as ``LAMM_KgCoOp`` with LAMM disabled. Settings: ``TRAINER.KGCOOP`` (CoOp's keys plus ``KG_WEIGHT``,
``TEMPLATE``, ``DATASET``, and ``PREC``).
"""

from lamm_plugin.dassl import PromptTrainer, register_trainer


class KgCoOp(PromptTrainer):
    """Knowledge-guided Context Optimization, https://arxiv.org/abs/2303.13283."""

    METHOD = "kgcoop"
    NODE = "KGCOOP"
    USE_LAMM = False


register_trainer(KgCoOp)
