"""KgCoOp: knowledge-guided context optimisation (Yao et al., "Visual-Language Prompt Tuning with
Knowledge-guided Context Optimization", CVPR 2023).

CoOp's prompt, plus a loss ``W * (1 - mean_c cos(t_c, t_c^clip))`` over all classes of the step, where ``t_c`` is
the learned prompt's (normalised) text feature of class ``c`` and ``t_c^clip`` frozen CLIP's feature of a
hand-crafted prompt (``"a photo of a {}, a type of pet."``, ...). The term is ``kg_alignment`` in the loss dict.
With LAMM, ``t_c`` carries the learned labels: the term then also pulls the label embeddings towards CLIP's
hand-crafted prompt, next to LAMM's own ``feature_alignment`` (see README, "Fidelity").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.config import KgCoOpConfig
from lamm_plugin.methods.base import register_method
from lamm_plugin.methods.coop import CoOp
from lamm_plugin.templates import DATASET_TEMPLATES, DEFAULT_TEMPLATE
from lamm_plugin.tokens import clean_classname

#: KgCoOp's hand-crafted templates: the zero-shot ones, except for textures.
KGCOOP_TEMPLATES: dict[str, str] = {**DATASET_TEMPLATES, "DescribableTextures": "a photo of a {}, a type of texture."}


@register_method
class KgCoOp(CoOp):
    """CoOp with KgCoOp's knowledge-guided term (``regularization``: ``kg_alignment``)."""

    name = "kgcoop"
    config_class = KgCoOpConfig

    def __init__(self, cfg: KgCoOpConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        if cfg.kg_weight < 0:
            raise ValueError(f"kg_weight must be >= 0, got {cfg.kg_weight}.")
        object.__setattr__(self, "_clip", clip)  # frozen, not a submodule: never in parameters() or checkpoints
        self._hand_crafted: dict[tuple, torch.Tensor] = {}

    def hand_crafted_template(self) -> str:
        return self.cfg.template or KGCOOP_TEMPLATES.get(self.cfg.dataset, DEFAULT_TEMPLATE)

    def hand_crafted_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Frozen CLIP's L2-normalised features ``[C, E]`` of the hand-crafted prompts (computed once per class set,
        device and precision)."""
        model = self._clip.model
        weight = model.token_embedding.weight
        key = (tuple(classnames), weight.device, weight.dtype)
        if key not in self._hand_crafted:
            template = self.hand_crafted_template()
            tokens = self._clip.tokenizer([template.format(clean_classname(n)) for n in classnames])
            with torch.no_grad():
                features = model.encode_text(tokens.to(weight.device)).float()
            self._hand_crafted = {key: F.normalize(features, dim=-1)}
        return self._hand_crafted[key]

    def regularization(
        self, model: Any, images: torch.Tensor, image: torch.Tensor, text: torch.Tensor, logits: torch.Tensor
    ) -> dict[str, tuple[float, torch.Tensor]]:
        reference = self.hand_crafted_features(model.classnames).to(text)
        score = 1.0 - F.cosine_similarity(text, reference, dim=-1).mean()
        return {"kg_alignment": (self.cfg.kg_weight, score)}
