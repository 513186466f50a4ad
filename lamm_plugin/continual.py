"""Class-incremental continual learning: the protocol and how a LAMM model moves from stage to stage.

The LAMM paper (Gao et al., AAAI 2024, arXiv 2312.08212) argues that label embeddings suit continual learning:
with the context and the encoders frozen, each class owns its label rows, so learning new classes cannot change
old ones. This module holds what training a stage needs, independent of Dassl:

* :func:`class_order` and :func:`split_stages`: the classes split into ``T`` stages, in an order drawn from a
  seed or given;
* :func:`prepare_stage`: moves a :class:`~lamm_plugin.lamm.LAMM` model to the next stage: earlier classes' label
  rows frozen, the new classes' rows added, the method's shared tensors (context, deep prompts, projections)
  carried over and either frozen or left trainable (``shared="freeze"`` / ``"train"``).

The accuracy matrix, the metrics (average incremental accuracy, last accuracy, forgetting) and the tables and
plots over the ``results.json`` of several runs are in :mod:`lamm_experiments.continual`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from typing import Optional

import torch

from lamm_plugin.errors import UserError
from lamm_plugin.tokens import clean_classname

logger = logging.getLogger(__name__)

SHARED_CHOICES = ("train", "freeze")


# ---- protocol ------------------------------------------------------------------------------------------------------
def class_order(num_classes: int, seed: Optional[int] = None, order: Optional[Sequence[int]] = None) -> list[int]:
    """The class order of a run: ``order`` when given (checked to be a permutation), else a permutation drawn from
    ``seed`` (``random.Random(seed).shuffle``), else the label order.
    """
    if order is not None:
        order = [int(c) for c in order]
        if sorted(order) != list(range(num_classes)):
            missing = sorted(set(range(num_classes)) - set(order))
            repeated = sorted(c for c in set(order) if order.count(c) > 1)
            raise UserError(
                f"The class order must list each of the {num_classes} labels once (missing: {missing[:10]}, "
                f"repeated: {repeated[:10]}, out of range: {sorted(c for c in order if not 0 <= c < num_classes)})."
            )
        return order
    labels = list(range(num_classes))
    if seed is not None:
        random.Random(seed).shuffle(labels)
    return labels


def split_stages(
    order: Sequence[int], num_stages: Optional[int] = None, classes_per_stage: Optional[int] = None
) -> list[list[int]]:
    """Cut a class order into stages.

    Args:
        order: Labels in the order they are learned.
        num_stages: ``T``; the classes are divided as evenly as possible (earlier stages take the remainder).
        classes_per_stage: Classes per stage instead of ``num_stages`` (the last stage takes what is left).

    Raises:
        ValueError: Neither or both given, fewer than 2 stages, or a stage without classes.
    """
    n = len(order)
    if (num_stages is None) == (classes_per_stage is None):
        raise UserError("Give exactly one of num_stages and classes_per_stage.")
    if classes_per_stage is not None:
        if classes_per_stage < 1:
            raise UserError(f"classes_per_stage must be at least 1, got {classes_per_stage}.")
        num_stages = math.ceil(n / classes_per_stage)
        sizes = [classes_per_stage] * (n // classes_per_stage) + (
            [n % classes_per_stage] if n % classes_per_stage else []
        )
    else:
        if not 2 <= num_stages <= n:
            raise UserError(f"num_stages must lie between 2 and the number of classes ({n}), got {num_stages}.")
        q, r = divmod(n, num_stages)
        sizes = [q + (1 if i < r else 0) for i in range(num_stages)]
    if len(sizes) < 2:
        raise UserError(f"{n} classes in stages of {classes_per_stage} give a single stage; use smaller stages.")
    stages, start = [], 0
    for size in sizes:
        stages.append(list(order[start : start + size]))
        start += size
    return stages


# ---- moving a model from stage to stage ----------------------------------------------------------------------------
def shared_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The host method's own tensors (context, deep prompts, projections): shared by every class."""
    return list(model.method.named_parameters())


def freeze_shared(model: torch.nn.Module) -> None:
    """Freeze the shared tensors (structurally: the method's parameters); build the optimiser afterwards."""
    model.method.requires_grad_(False)


def trainable_shared(model: torch.nn.Module) -> list[str]:
    """Names of the shared tensors that an optimiser built now would train."""
    return [name for name, p in shared_parameters(model) if p.requires_grad]


def prepare_stage(model: torch.nn.Module, classnames: Sequence[str], stage: int, shared: str = "freeze") -> list[str]:
    """Move ``model`` to stage ``stage`` with the classes ``classnames``.

    Earlier classes' label rows (every class not in ``classnames``) are frozen (they stay in the model and serve
    again when the class set includes them), the new classes get rows initialised from CLIP's name embeddings, and
    the model serves exactly the stage's classes for training. Shared tensors: ``"freeze"`` trains them in stage 0
    only (when the method trains them at all), ``"train"`` trains them in every stage, where they can forget
    earlier classes. Build the optimiser afterwards.

    Returns:
        Names of the shared tensors trainable in this stage (a warning is logged when ``stage > 0``).
    """
    if shared not in SHARED_CHOICES:
        raise UserError(f"shared must be one of {SHARED_CHOICES}, got {shared!r}.")
    emb = model.label_embedding
    if emb is not None:
        current = {clean_classname(c) for c in classnames}
        earlier = [c for c in emb.classnames if c not in current]
        if earlier:
            emb.freeze(earlier)
    model.set_classnames(list(classnames))
    if emb is not None:
        model.add_classes(list(classnames))
    if shared == "freeze" and stage > 0:
        freeze_shared(model)
    trainable = trainable_shared(model)
    if stage > 0 and trainable:
        logger.warning(
            "Stage %d trains the shared tensors %s: earlier classes can be forgotten (shared='freeze' keeps them).",
            stage + 1,
            trainable,
        )
    return trainable
