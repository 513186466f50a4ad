"""Zero-shot CLIP with a hand-crafted template (Radford et al., ICML 2021), as CoOp's ``ZeroshotCLIP``.

Nothing is trained: run it with ``--eval-only``. Settings: ``TRAINER.ZEROSHOTCLIP`` (``TEMPLATE``; empty picks
CoOp's template for ``DATASET.NAME``).
"""

from lamm_plugin.dassl import PromptTrainer, register_trainer


class ZeroshotCLIP(PromptTrainer):
    """Zero-shot CLIP."""

    METHOD = "zeroshot"
    NODE = "ZEROSHOTCLIP"
    USE_LAMM = False


register_trainer(ZeroshotCLIP)
