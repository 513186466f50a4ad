"""CoCoOp baseline (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022).

The same core as ``LAMM_CoCoOp`` with LAMM disabled. Settings: ``TRAINER.COCOOP`` (``N_CTX``, ``CTX_INIT``,
``META_REDUCTION``, ``PREC``).
"""

from lamm_plugin.dassl import PromptTrainer, register_trainer


class CoCoOp(PromptTrainer):
    """Conditional Context Optimization, https://arxiv.org/abs/2203.05557."""

    METHOD = "cocoop"
    NODE = "COCOOP"
    USE_LAMM = False


register_trainer(CoCoOp)
