"""CoOp: context optimisation (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

Learnable context vectors take the place of the template words around the class name. With ``ctx_init`` the
context starts from CLIP's embeddings of those words; ``train_ctx=False`` keeps it fixed, which with
``ctx_init="a photo of a"`` is "LAMM alone" in the LAMM paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.config import CoOpConfig
from lamm_plugin.methods.base import PromptMethod, TextPrompt, register_method, token_embeddings
from lamm_plugin.tokens import clean_classname


@register_method
class CoOp(PromptMethod):
    """CoOp's prompt learner: ``[SOS] ctx_1..ctx_M [CLASS] . [EOS]`` (or class in front / in the middle)."""

    name = "coop"
    config_class = CoOpConfig

    def __init__(self, cfg: CoOpConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        if cfg.class_token_position not in ("end", "middle", "front"):
            raise ValueError(f"class_token_position must be end, middle or front, not {cfg.class_token_position!r}.")
        width = clip.model.token_embedding.weight.shape[1]
        init = cfg.ctx_init.replace("_", " ").strip()
        if init:
            vectors = token_embeddings(clip, init)  # [n_ctx, width]
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
