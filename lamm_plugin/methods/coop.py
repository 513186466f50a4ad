"""CoOp: context optimisation (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

Learnable context vectors take the place of the template words around the class name. With ``ctx_init`` the
context starts from CLIP's embeddings of those words; ``train_ctx=False`` keeps it fixed, which with
``ctx_init="a photo of a"`` is "LAMM alone" in the LAMM paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.methods.base import PromptMethod, TextPrompt, register_method
from lamm_plugin.tokens import clean_classname

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


@dataclass
class CoOpConfig:
    """CoOp (Zhou et al., IJCV 2022): learnable context vectors in front of (or around) the class name.

    Attributes:
        n_ctx: Number of context vectors (ignored when ``ctx_init`` is given: one per word).
        ctx_init: Words that initialise the context (e.g. ``"a photo of a"``); empty for random init.
        csc: Class-specific context (one set of vectors per class).
        class_token_position: ``"end"``, ``"middle"`` or ``"front"``.
        train_ctx: Train the context. ``False`` with ``ctx_init="a photo of a"`` is "LAMM alone".
    """

    n_ctx: int = 16
    ctx_init: str = ""
    csc: bool = False
    class_token_position: str = "end"
    train_ctx: bool = True

    def __post_init__(self) -> None:
        if self.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(
                f"class_token_position must be one of {CLASS_TOKEN_POSITIONS}, not {self.class_token_position!r}."
            )
        if self.n_ctx < 1 and not self.ctx_init.replace("_", " ").strip():
            raise ValueError(f"n_ctx must be at least 1 without ctx_init, got {self.n_ctx}.")


@register_method
class CoOp(PromptMethod):
    """CoOp's prompt learner: ``[SOS] ctx_1..ctx_M [CLASS] . [EOS]`` (or class in front / in the middle)."""

    name = "coop"
    display_name = "CoOp"
    config_class = CoOpConfig

    def __init__(self, cfg: CoOpConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        width = clip.text_width
        init = cfg.ctx_init.replace("_", " ").strip()
        if init:
            vectors = clip.token_embeddings(init)  # [n_ctx, width]
            if cfg.csc:
                vectors = vectors.expand(len(classnames), -1, -1).clone()
            self.words = init.split()
        else:
            shape = (len(classnames), cfg.n_ctx, width) if cfg.csc else (cfg.n_ctx, width)
            vectors = nn.init.normal_(torch.empty(shape), std=0.02)
            self.words = ["X"] * cfg.n_ctx
        self.n_ctx = vectors.shape[-2]
        self.ctx = nn.Parameter(vectors, requires_grad=cfg.train_ctx)
        self.classnames = [clean_classname(n) for n in classnames]

    def template(self) -> tuple[str, Sequence[int]]:
        words, position = self.words, self.cfg.class_token_position
        if position == "end":
            text = " ".join(words) + " {}."
        elif position == "front":
            text = "{} " + " ".join(words) + "."
        else:
            half = len(words) // 2
            text = " ".join(words[:half] + ["{}"] + words[half:]) + "."
        # The context words are the template's first tokens once the class name is taken out.
        return text, range(self.n_ctx)

    def text_prompt(self) -> TextPrompt:
        return TextPrompt(ctx=self.ctx)

    def text_is_trainable(self) -> bool:
        return self.ctx.requires_grad

    def check_classnames(self, classnames: Sequence[str]) -> None:
        if self.cfg.csc and [clean_classname(n) for n in classnames] != self.classnames:
            raise ValueError("Class-specific context (csc=True) only serves the classes it was trained on.")
