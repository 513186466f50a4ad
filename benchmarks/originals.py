"""Import modules of an original repository (CoOp, MaPLe, PromptSRC, KgCoOp, official LAMM) from its checkout.

The originals ship top-level packages named like ours or like each other's (``clip``, ``trainers``,
``datasets``, ``helpers``) and register their trainers (``CoOp``, ``MaPLe``, ...) and datasets in Dassl's
registries, which raise on a second registration of a name. :func:`import_original` imports what a comparison
needs and leaves ``sys.path``, ``sys.modules`` and every Dassl registry exactly as they were, so the original
code can be imported in any order, any number of times, beside this repository's own trainers.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from types import ModuleType

#: Top-level names the original repositories use for their own packages.
ORIGINAL_PACKAGES = ("clip", "trainers", "datasets", "helpers")


def dassl_registries() -> list:
    """Every registry of Dassl (trainers, datasets, evaluators, backbones, heads, networks)."""
    from dassl.data.datasets.build import DATASET_REGISTRY
    from dassl.engine.build import TRAINER_REGISTRY
    from dassl.evaluation.build import EVALUATOR_REGISTRY
    from dassl.modeling.backbone.build import BACKBONE_REGISTRY
    from dassl.modeling.head.build import HEAD_REGISTRY
    from dassl.modeling.network.build import NETWORK_REGISTRY

    return [TRAINER_REGISTRY, DATASET_REGISTRY, EVALUATOR_REGISTRY, BACKBONE_REGISTRY, HEAD_REGISTRY, NETWORK_REGISTRY]


@contextlib.contextmanager
def original_modules(path: str):
    """While inside: the checkout at ``path`` first on ``sys.path``, its own top-level packages importable and
    Dassl's trainer and dataset registries empty but for what it registers (so a run of its ``train.py`` builds
    its trainers and datasets; the originals and this repository register nothing elsewhere);
    afterwards every registry, ``sys.path`` and ``sys.modules`` are as they were."""
    registries = dassl_registries()
    saved_maps = [dict(registry._obj_map) for registry in registries]
    saved_modules = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ORIGINAL_PACKAGES}
    saved_path = list(sys.path)
    for key in saved_modules:
        del sys.modules[key]
    for registry in registries[:2]:  # trainers and datasets: the others hold only Dassl's own
        registry._obj_map.clear()
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for key in [k for k in sys.modules if k.split(".")[0] in ORIGINAL_PACKAGES]:
            del sys.modules[key]
        sys.modules.update(saved_modules)
        for registry, saved in zip(registries, saved_maps):
            registry._obj_map.clear()
            registry._obj_map.update(saved)


def import_original(path: str, *modules: str) -> list[ModuleType]:
    """Import ``modules`` (e.g. ``"clip.clip"``, ``"trainers.maple"``) from the checkout at ``path``.

    The modules see empty Dassl trainer and dataset registries (so their registrations cannot collide with ours)
    and their own top-level packages; afterwards every registry, ``sys.path`` and ``sys.modules`` are restored
    (:func:`original_modules`), so the returned modules stay usable while nothing of them remains visible to later
    imports.
    """
    with original_modules(path):
        return [importlib.import_module(name) for name in modules]
