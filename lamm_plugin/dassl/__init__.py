"""The Dassl adapter: config nodes, trainers ``LAMM_<Host>`` (``LAMM_CoOp``, ``LAMM_MaPLe``, ...), fixes for current
torch. Nodes and trainers are derived from the method registry, one per registered method.

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
from lamm_plugin.dassl.trainer import LAMM_TRAINERS, TRAINERS, NonFiniteError, PromptTrainer, baseline_trainers

globals().update(LAMM_TRAINERS)

__all__ = [
    "ConfigKeyError",
    "LAMM_TRAINERS",
    "NonFiniteError",
    "PromptTrainer",
    "TRAINERS",
    "baseline_trainers",
    "add_baseline_config",
    "add_lamm_config",
    "dassl_default_cfg",
    "compat",
    "install",
    "lamm_config_from_cfg",
    "method_config_from_cfg",
    "register_trainer",
    *LAMM_TRAINERS,
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
