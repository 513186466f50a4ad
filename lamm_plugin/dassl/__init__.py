"""The Dassl adapter: config nodes, trainers ``LAMM_CoOp`` / ``LAMM_MaPLe`` / ``LAMM_VPT``, fixes for current torch.

Importing this package is the whole drop-in recipe for a CoOp-family repository (CoOp, MaPLe, PromptSRC,
KgCoOp, ...)::

    import lamm_plugin.dassl  # noqa: F401

It adds the LAMM config nodes to Dassl's default config (so the host's yaml files and command-line options may
set them before any of our code runs) and registers the ``LAMM_*`` trainers in Dassl's ``TRAINER_REGISTRY``.
Nothing else is registered: the host's own trainers (``CoOp``, ``MaPLe``, ...) and datasets stay as they are.

``import lamm_plugin`` alone never imports Dassl or yacs.
"""

from __future__ import annotations

import logging

from dassl.engine import TRAINER_REGISTRY

from lamm_plugin.dassl import compat
from lamm_plugin.dassl.config import (
    ConfigKeyError,
    add_baseline_config,
    add_lamm_config,
    dassl_default_cfg,
    install,
    lamm_config_from_cfg,
    method_config_from_cfg,
)
from lamm_plugin.dassl.trainer import (
    LAMM_VPT,
    TRAINERS,
    LAMM_CoCoOp,
    LAMM_CoOp,
    LAMM_KgCoOp,
    LAMM_MaPLe,
    LAMM_PromptSRC,
    PromptTrainer,
)

__all__ = [
    "ConfigKeyError",
    "LAMM_CoCoOp",
    "LAMM_CoOp",
    "LAMM_KgCoOp",
    "LAMM_MaPLe",
    "LAMM_PromptSRC",
    "LAMM_VPT",
    "PromptTrainer",
    "add_baseline_config",
    "add_lamm_config",
    "dassl_default_cfg",
    "compat",
    "install",
    "lamm_config_from_cfg",
    "method_config_from_cfg",
    "register_trainer",
]

logger = logging.getLogger(__name__)


def register_trainer(cls: type) -> bool:
    """Register ``cls`` in Dassl's ``TRAINER_REGISTRY`` under its class name unless the name is taken.

    Dassl's registry raises on a duplicate name; host repositories register ``CoOp``, ``MaPLe``, ... themselves,
    and their class must win. Returns whether ``cls`` is now the registered class.
    """
    name = cls.__name__
    if name not in TRAINER_REGISTRY.registered_names():
        TRAINER_REGISTRY.register(cls)
        return True
    registered = TRAINER_REGISTRY.get(name)
    if registered is not cls:
        logger.info("Trainer %s is registered already (%s); keeping that one.", name, registered.__module__)
    return registered is cls


install()
compat.route_core_logging()
for _trainer in TRAINERS:
    register_trainer(_trainer)
