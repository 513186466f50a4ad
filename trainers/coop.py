"""CoOp baseline (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

The same core as ``LAMM_CoOp`` with LAMM disabled: learnable context vectors, class-name embeddings fixed.
Settings: ``TRAINER.COOP`` (``N_CTX``, ``CTX_INIT``, ``CSC``, ``CLASS_TOKEN_POSITION``, ``TRAIN_CTX``, ``PREC``),
the keys of CoOp's own configs.
"""

from lamm_plugin.dassl import PromptTrainer, register_trainer


class CoOp(PromptTrainer):
    """Context Optimization (CoOp), https://arxiv.org/abs/2109.01134."""

    METHOD = "coop"
    NODE = "COOP"
    USE_LAMM = False


register_trainer(CoOp)
