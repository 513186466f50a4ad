"""The interface every host method implements, and the method registry.

A host method says which template its text prompts follow, which template tokens are context slots and what
goes into them (CoOp's context vectors, MaPLe's shallow and deep prompts), and which visual prompts it adds.
Everything else (encoders, label embeddings, loss, caching) is shared and lives in :mod:`lamm_plugin.lamm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle

METHODS: dict[str, type[PromptMethod]] = {}


def register_method(cls: type[PromptMethod]) -> type[PromptMethod]:
    """Class decorator adding a method to :data:`METHODS` under ``cls.name``."""
    if cls.name in METHODS:
        raise KeyError(f"Method {cls.name!r} is registered already.")
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


class PromptMethod(nn.Module):
    """Base class of host methods.

    Args:
        cfg: The method's config dataclass.
        clip: The frozen CLIP the prompts are for.
        classnames: Class names in label order.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    #: The context depends on the image (CoCoOp): text features are computed per image, see :meth:`image_context`.
    image_conditioned: ClassVar[bool] = False

    def __init__(self, cfg: Any, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = len(classnames)

    def template(self) -> tuple[str, Sequence[int] | str]:
        """The text template (with ``{}``) and its context slots (see :func:`lamm_plugin.tokens.build_layout`)."""
        raise NotImplementedError

    def text_prompt(self) -> TextPrompt:
        """Context vectors and deep prompts for the text tower (nothing by default)."""
        return TextPrompt()

    def visual_prompt(self) -> VisualPrompt:
        """Prompt tokens for the image tower (nothing by default)."""
        return VisualPrompt()

    def text_is_trainable(self) -> bool:
        """Whether the text prompts depend on a trainable tensor of the method (decides caching)."""
        return False

    def regularization(
        self, model: Any, images: torch.Tensor, image: torch.Tensor, text: torch.Tensor, logits: torch.Tensor
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """The method's own loss terms in training, ``{name: (weight, unweighted value)}`` (none by default): KgCoOp's
        ``kg_alignment``, PromptSRC's self-regularisation. :class:`~lamm_plugin.lamm.LAMM` adds them, weighted, to
        ``total`` beside its own terms.

        ``model`` is the :class:`~lamm_plugin.lamm.LAMM` model; ``image`` ``[B, E]`` and ``text`` ``[C, E]`` are the
        normalised prompted features and ``logits`` ``[B, C]`` the prompted logits of the batch ``images``.
        """
        return {}

    def check_classnames(self, classnames: Sequence[str]) -> None:
        """Raise if the method cannot serve this class set (e.g. class-specific context for other classes)."""

    def image_context(self, image_features: torch.Tensor) -> torch.Tensor:
        """Per-image context vectors ``[B, n_ctx, width]`` from L2-normalised image features ``[B, E]`` (only for
        methods with ``image_conditioned = True``)."""
        raise NotImplementedError(f"{type(self).__name__} does not condition its context on the image.")


def token_embeddings(clip: CLIPBundle, text: str) -> torch.Tensor:
    """CLIP's token embeddings ``[n_tokens, width]`` of ``text`` (without start/end tokens), float32."""
    ids = torch.tensor(clip.tokenizer.encode(text), dtype=torch.long, device=clip.model.token_embedding.weight.device)
    with torch.no_grad():
        return clip.model.token_embedding(ids).float()
