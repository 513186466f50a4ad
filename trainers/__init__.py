"""This repository's Dassl trainers (not installed; ``train.py`` imports them).

Importing the package registers the LAMM trainers of the plugin (``LAMM_CoOp``, ``LAMM_MaPLe``, ...: one per
registered method with a LAMM variant) and the baselines built on the same core, one per registered method
(``CoOp``, ``MaPLe``, ``VPT``, ``CoCoOp``, ``KgCoOp``, ``PromptSRC``, ``ZeroshotCLIP``, ...: the method's
``display_name``), and adds the baselines' config nodes (``TRAINER.COOP``, ...: the display name in upper case) to
Dassl's default config. A baseline's settings are the keys of its method's config dataclass plus ``PREC`` (the
keys of the host repositories' own configs). A name that is taken already is left alone. Also ``LinearProbeCLIP``
(logistic regression on frozen CLIP image features, :mod:`lamm_plugin.dassl.linear_probe`).
"""

from lamm_plugin.dassl import LAMM_TRAINERS, add_baseline_config, baseline_trainers, dassl_default_cfg, register_trainer
from lamm_plugin.dassl.linear_probe import LinearProbeCLIP, add_linear_probe_config

add_baseline_config(dassl_default_cfg())
add_linear_probe_config(dassl_default_cfg())

#: The baselines by class name (``CoOp``, ..., ``ZeroshotCLIP``, ``LinearProbeCLIP``).
BASELINES = {**baseline_trainers(__name__), "LinearProbeCLIP": LinearProbeCLIP}
for _trainer in BASELINES.values():
    register_trainer(_trainer)
globals().update(BASELINES)
globals().update(LAMM_TRAINERS)

__all__ = ["BASELINES", *BASELINES, *LAMM_TRAINERS]
