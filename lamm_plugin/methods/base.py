"""The interface every host method implements, and the method registry.

A host method says which template its text prompts follow, which template tokens are context slots and what
goes into them (CoOp's context vectors, MaPLe's shallow and deep prompts), and which visual prompts it adds.
Everything else (encoders, label embeddings, loss, caching) is shared and lives in :mod:`lamm_plugin.lamm`.

A host method is one file (as a PEFT tuner is): its config dataclass, its :class:`PromptMethod` subclass and one
:func:`register_method`. The registry is the single list of hosts: the Dassl adapter derives its config nodes and
trainer classes (``<display_name>``, ``LAMM_<display_name>``) from it, and the tests check that every registered
method has a test case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.feature_cache import FeatureCache

METHODS: dict[str, type[PromptMethod]] = {}

#: Standard deviation of randomly initialised prompt vectors (CoOp's and MaPLe's ``nn.init.normal_(std=0.02)``).
PROMPT_INIT_STD = 0.02


def random_tokens(n: int, width: int) -> nn.Parameter:
    """``n`` learnable prompt vectors of ``width``, drawn as the originals draw them."""
    return nn.Parameter(nn.init.normal_(torch.empty(n, width), std=PROMPT_INIT_STD))


def initial_context(clip: CLIPBundle, ctx_init: str, n_ctx: int, key: str = "n_ctx") -> tuple[torch.Tensor, str]:
    """The initial context vectors ``[n_ctx, width]`` of a text prompt and the words whose slots they fill.

    With ``ctx_init`` (underscores read as spaces): the first ``n_ctx`` token embeddings of those words, and the
    words; a ``ValueError`` (naming ``key``) when they have fewer tokens. Without: random vectors and ``X``
    placeholders, as MaPLe's and PromptSRC's code.
    """
    init = ctx_init.replace("_", " ").strip()
    if not init:
        return nn.init.normal_(torch.empty(n_ctx, clip.text_width), std=PROMPT_INIT_STD), " ".join(["X"] * n_ctx)
    vectors = clip.token_embeddings(init)
    if len(vectors) < n_ctx:
        raise ValueError(f"ctx_init {init!r} has {len(vectors)} tokens, fewer than {key}={n_ctx}.")
    return vectors[:n_ctx].clone(), init


def register_method(cls: type[PromptMethod]) -> type[PromptMethod]:
    """Class decorator adding a method to :data:`METHODS` under ``cls.name``.

    Raises:
        KeyError: The name or the display name is taken.
        TypeError: The class declares no name, display name or config dataclass.
    """
    for attribute in ("name", "display_name", "config_class"):
        if attribute not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must declare its own {attribute!r} to be registered.")
    if cls.name in METHODS:
        raise KeyError(f"Method {cls.name!r} is registered already.")
    taken = {m.display_name: m.name for m in METHODS.values()}
    if cls.display_name in taken:
        raise KeyError(f"Display name {cls.display_name!r} is taken by method {taken[cls.display_name]!r}.")
    METHODS[cls.name] = cls
    return cls


@dataclass
class TextPrompt:
    """What a method writes into the text prompts.

    Attributes:
        ctx: ``[n_ctx, width]`` (shared) or ``[C, n_ctx, width]`` (class-specific) vectors for the context slots.
        deep: Deep prompts; ``deep[i]`` replaces positions ``deep_start : deep_start + n`` at block ``i + 1``.
        deep_start: First position the deep prompts replace.
    """

    ctx: Optional[torch.Tensor] = None
    deep: list[torch.Tensor] = field(default_factory=list)
    deep_start: int = 1


@dataclass
class VisualPrompt:
    """Visual prompt tokens (``[n, width]``) appended to the image tokens, and their deep replacements."""

    shallow: Optional[torch.Tensor] = None
    deep: list[torch.Tensor] = field(default_factory=list)


@dataclass
class StepFeatures:
    """What a training step computed, handed to :meth:`PromptMethod.regularization`.

    Attributes:
        images: ``[B, 3, H, W]`` the batch.
        image: ``[B, E]`` L2-normalised prompted image features.
        text: ``[C, E]`` L2-normalised prompted class text features (learned labels when LAMM is on).
        logits: ``[B, C]`` prompted logits.
        classnames: The ``C`` class names served, in label order.
        logit_scale: CLIP's (exponentiated) logit scale, a scalar tensor on the model's device.
    """

    images: torch.Tensor
    image: torch.Tensor
    text: torch.Tensor
    logits: torch.Tensor
    classnames: Sequence[str]
    logit_scale: torch.Tensor


class PromptMethod(nn.Module):
    """Base class of host methods.

    Args:
        cfg: The method's config dataclass.
        clip: The frozen CLIP the prompts are for.
        classnames: Class names in label order.

    Attributes:
        name: Registry key (``"coop"``); the config field ``method`` of checkpoints.
        display_name: The method as its paper writes it (``"CoOp"``): the baseline trainer's class name and, upper
            case, its Dassl config node (``TRAINER.COOP``); the LAMM trainer is ``LAMM_<display_name>`` with node
            ``TRAINER.LAMM_<DISPLAY_NAME>``.
        config_class: The method's config dataclass.
        lamm_variant: Whether a LAMM trainer exists for the method (zero-shot CLIP has none).
        image_conditioned: The context depends on the image (CoCoOp): text features are computed per image, see
            :meth:`image_context`.
        prompts_image_tower: The method puts prompts into the image tower (:meth:`visual_prompt`: VPT, MaPLe,
            PromptSRC, IVLP), so its image features change with training. ``False`` (the default) declares the image
            tower frozen and unprompted: the image features of a test set are then the same for every run and are
            cached (:mod:`lamm_plugin.feature_cache`); the model checks the declaration against
            :meth:`visual_prompt`.
        fp32_in_fp16_runs: The attributes holding learned tensors that the original code keeps in fp32 in its
            ``PREC fp16`` runs (MaPLe's deep prompts and their projections); the others it keeps in fp16
            (:meth:`~lamm_plugin.lamm.LAMM.learned_to_fp16`, the trainers' ``FP16_LEARNED``).
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    config_class: ClassVar[type]
    lamm_variant: ClassVar[bool] = True
    image_conditioned: ClassVar[bool] = False
    prompts_image_tower: ClassVar[bool] = False
    fp32_in_fp16_runs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = len(classnames)
        # Where frozen-CLIP text features of fixed prompts are kept (PromptSRC, KgCoOp); None computes them each run.
        self.feature_cache: Optional[FeatureCache] = None

    def template(self) -> tuple[str, Sequence[int] | str]:
        """The text template (with ``{}``) and its context slots (see :func:`lamm_plugin.tokens.build_layout`)."""
        raise NotImplementedError

    def text_prompt(self) -> TextPrompt:
        """Context vectors and deep prompts for the text tower (nothing by default)."""
        return TextPrompt()

    def visual_prompt(self) -> VisualPrompt:
        """Prompt tokens for the image tower (nothing by default)."""
        return VisualPrompt()

    def checkpoint_image(self) -> bool:
        """Whether the image tower recomputes its blocks' activations in the backward pass (``checkpoint_image``
        of the method's config; see :class:`~lamm_plugin.encoders.ImageEncoder`). Exact; saves memory only where
        gradients flow through the image tower (visual prompts)."""
        return bool(getattr(self.cfg, "checkpoint_image", False))

    def text_is_trainable(self) -> bool:
        """Whether the text prompts depend on a trainable tensor of the method (decides caching)."""
        return False

    def regularization(self, step: StepFeatures) -> dict[str, tuple[Optional[float], torch.Tensor]]:
        """The method's own loss terms in training, ``{name: (weight, unweighted value)}`` (none by default): KgCoOp's
        ``kg_alignment``, PromptSRC's self-regularisation. :class:`~lamm_plugin.lamm.LAMM` adds them, weighted, to
        ``total`` beside its own terms; a term of weight ``None`` is reported but not added (for :meth:`backward`).

        Args:
            step: The batch and the features, logits and classes of the training step.
        """
        return {}

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        params: Sequence[nn.Parameter],
        scale: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        """Back-propagate one training step's loss terms into the ``.grad`` of ``params``, as ``Tensor.backward``
        does (accumulating into a ``.grad`` that is set). The default: ``scale(losses["total"]).backward()``.

        The hook of a host that changes gradients (ProGrad projects one term's gradient against another's). Every
        training loop calls it through :meth:`~lamm_plugin.lamm.LAMM.forward_backward`: the Dassl trainers' step, its
        CUDA-graph capture (:mod:`lamm_plugin.cuda_graph`; so it must read no tensor value on the host) and
        ``examples/train_core.py``.

        Args:
            losses: The step's named loss terms (``total`` and every term, weight-``None`` ones included).
            params: The model's trainable tensors (what the optimiser steps).
            scale: Multiplies a loss by the GradScaler's scale (the identity without one); apply it to every loss
                that is back-propagated.
        """
        scale(losses["total"]).backward()

    # ---- training life: hooks a training loop calls (the Dassl trainers and examples/train_core.py do) ----------
    def on_epoch_end(self, model: nn.Module, epoch: int, max_epoch: int) -> None:
        """Called after each training epoch (``epoch`` 0-based, of ``max_epoch``), before the checkpoint is saved.

        Args:
            model: The model being trained (the :class:`~lamm_plugin.lamm.LAMM` holding this method); its trainable
                parameters are what the optimiser updates.
            epoch: The epoch just finished, 0-based.
            max_epoch: The number of epochs of the run.
        """

    def extra_state(self) -> dict[str, Any]:
        """Training state beyond the parameters that an exact resume needs (PromptSRC's GPA aggregate), as
        ``{checkpoint key: value}`` of tensors and plain values; the trainer saves it beside the model state."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` output read from a checkpoint (a key the checkpoint lacks is ``None``)."""

    def check_classnames(self, classnames: Sequence[str]) -> None:
        """Raise if the method cannot serve this class set (e.g. class-specific context for other classes)."""

    def image_context(self, image_features: torch.Tensor) -> torch.Tensor:
        """Per-image context vectors ``[B, n_ctx, width]`` from L2-normalised image features ``[B, E]`` (only for
        methods with ``image_conditioned = True``)."""
        raise NotImplementedError(f"{type(self).__name__} does not condition its context on the image.")
