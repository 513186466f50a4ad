"""The LAMM trainers, defined and registered by the plugin (:mod:`lamm_plugin.dassl`).

``LAMM_CoOp`` (CoOp + LAMM; LAMM alone with a frozen context), ``LAMM_MaPLe``, ``LAMM_VPT``, ``LAMM_CoCoOp``,
``LAMM_KgCoOp`` and ``LAMM_PromptSRC``; their settings are ``TRAINER.LAMM_<HOST>`` (``LAMM_COOP``, ...) and the
shared ``TRAINER.LAMM``.
"""

from lamm_plugin.dassl import LAMM_VPT, LAMM_CoCoOp, LAMM_CoOp, LAMM_KgCoOp, LAMM_MaPLe, LAMM_PromptSRC

__all__ = ["LAMM_CoCoOp", "LAMM_CoOp", "LAMM_KgCoOp", "LAMM_MaPLe", "LAMM_PromptSRC", "LAMM_VPT"]
