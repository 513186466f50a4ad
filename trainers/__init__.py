"""This repository's Dassl trainers (not installed; ``train.py`` imports them).

Importing the package registers the LAMM trainers of the plugin (``LAMM_CoOp``, ``LAMM_MaPLe``, ``LAMM_VPT``,
``LAMM_PromptSRC``) and the baselines built on the same core (``CoOp``, ``MaPLe``, ``VPT``, ``PromptSRC``,
``ZeroshotCLIP``), and adds the baselines' config nodes (``TRAINER.COOP``, ...) to Dassl's default config. A name
that is taken already is left alone.
"""

from lamm_plugin.dassl import add_baseline_config, dassl_default_cfg

add_baseline_config(dassl_default_cfg())

from trainers.cocoop import CoCoOp  # noqa: E402
from trainers.coop import CoOp  # noqa: E402
from trainers.kgcoop import KgCoOp  # noqa: E402
from trainers.lamm import LAMM_VPT, LAMM_CoCoOp, LAMM_CoOp, LAMM_KgCoOp, LAMM_MaPLe, LAMM_PromptSRC  # noqa: E402
from trainers.maple import MaPLe  # noqa: E402
from trainers.promptsrc import PromptSRC  # noqa: E402
from trainers.vpt import VPT  # noqa: E402
from trainers.zsclip import ZeroshotCLIP  # noqa: E402

__all__ = ["VPT", "CoOp", "LAMM_CoOp", "LAMM_MaPLe", "LAMM_VPT", "MaPLe", "ZeroshotCLIP"]
__all__ += ["CoCoOp", "KgCoOp", "LAMM_CoCoOp", "LAMM_KgCoOp", "LAMM_PromptSRC", "PromptSRC"]
