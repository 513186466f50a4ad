"""The LAMM trainers, defined and registered by the plugin (:mod:`lamm_plugin.dassl`).

``LAMM_CoOp`` (CoOp + LAMM; LAMM alone with a frozen context), ``LAMM_MaPLe``, ``LAMM_VPT`` and ``LAMM_PromptSRC``;
their settings are ``TRAINER.LAMM_COOP`` / ``TRAINER.LAMM_MAPLE`` / ``TRAINER.LAMM_VPT`` / ``TRAINER.LAMM_PROMPTSRC``
and the shared ``TRAINER.LAMM``.
"""

from lamm_plugin.dassl import LAMM_VPT, LAMM_CoOp, LAMM_MaPLe, LAMM_PromptSRC

__all__ = ["LAMM_CoOp", "LAMM_MaPLe", "LAMM_VPT", "LAMM_PromptSRC"]
