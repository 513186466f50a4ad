"""KgCoOp: knowledge-guided context optimisation (Yao et al., "Visual-Language Prompt Tuning with
Knowledge-guided Context Optimization", CVPR 2023).

CoOp's prompt, plus a loss ``W * (1 - mean_c cos(t_c, t_c^clip))`` over all classes of the step, where ``t_c`` is
the learned prompt's (normalised) text feature of class ``c`` and ``t_c^clip`` frozen CLIP's feature of a
hand-crafted prompt (``"a photo of a {}, a type of pet."``, ...), in fp16 whatever the run's precision, as the
original's second CLIP computes it (``hand_crafted_precision``). The term is ``kg_alignment`` in the loss dict.
With LAMM, ``t_c`` carries the learned labels: the term then also pulls the label embeddings towards CLIP's
hand-crafted prompt, next to LAMM's own ``feature_alignment`` (see README, "Fidelity").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lamm_plugin.backbone import CLIPBundle, clip_in_precision, draw_like_a_clip_build
from lamm_plugin.feature_cache import cached_text_features
from lamm_plugin.methods.base import StepFeatures, register_method
from lamm_plugin.methods.coop import CoOp, CoOpConfig
from lamm_plugin.templates import DATASET_TEMPLATES, DEFAULT_TEMPLATE
from lamm_plugin.tokens import clean_classname

#: KgCoOp's hand-crafted templates: the zero-shot ones, except for textures.
KGCOOP_TEMPLATES: dict[str, str] = {**DATASET_TEMPLATES, "DescribableTextures": "a photo of a {}, a type of texture."}
#: Precisions of the hand-crafted features: the original's fp16 in every run precision, or the run's own.
HAND_CRAFTED_PRECISIONS = ("fp16", "run")


@dataclass
class KgCoOpConfig(CoOpConfig):
    """KgCoOp (Yao et al., CVPR 2023): CoOp plus a loss keeping the class text features near CLIP's features of a
    hand-crafted prompt.

    Attributes:
        kg_weight: Weight ``W`` of the knowledge-guided term ``1 - mean_c cos(t_c, t_c^clip)`` (8.0 in the paper's
            base-to-new runs).
        template: Hand-crafted template with ``{}``; empty picks the dataset's (KgCoOp's table).
        dataset: Dataset name used to pick the template when ``template`` is empty.
        hand_crafted_precision: What computes the hand-crafted features: ``"fp16"``, as the original (its second
            CLIP stays in fp16 whatever the run's precision), CLIP's weights in fp16, built as ``PREC fp16`` builds
            them (in a bf16 run: its bf16 weights), outside autocast; ``"run"``: the run's CLIP in its precision.
    """

    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    kg_weight: float = 8.0
    template: str = ""
    dataset: str = ""
    hand_crafted_precision: str = "fp16"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kg_weight < 0:
            raise ValueError(f"kg_weight must be >= 0, got {self.kg_weight}.")
        if self.hand_crafted_precision not in HAND_CRAFTED_PRECISIONS:
            raise ValueError(
                f"hand_crafted_precision must be one of {HAND_CRAFTED_PRECISIONS}, not {self.hand_crafted_precision!r}."
            )


def original_build_draws(clip: CLIPBundle) -> None:
    """Make, and drop, the random draws the original KgCoOp makes after its context while building its prompt
    learner: an unused ``bias_vectors`` ``[1, 512]`` (normal, std 0.02), a second CLIP of the same shapes (for its
    hand-crafted features; initialised before its weights load), an unused ``meta_net`` ``Linear(512, 512)`` and an
    unused ``adapter`` (``Linear(512, 128)``, ``Linear(128, 512)``, no biases).

    So the data order and every later draw of a run follow the original's random stream
    (``tests/test_whole_run.py``). A CLIP not in OpenAI's layout (which the original cannot load) makes only the
    other two.
    """
    torch.empty(1, 512).normal_(std=0.02)
    draw_like_a_clip_build(clip)
    torch.nn.Linear(512, 512)
    torch.nn.Linear(512, 128, bias=False)
    torch.nn.Linear(128, 512, bias=False)


@register_method
class KgCoOp(CoOp):
    """CoOp with KgCoOp's knowledge-guided term (``regularization``: ``kg_alignment``)."""

    name = "kgcoop"
    display_name = "KgCoOp"
    config_class = KgCoOpConfig

    def __init__(self, cfg: KgCoOpConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        original_build_draws(clip)
        object.__setattr__(self, "_clip", clip)  # frozen, not a submodule: never in parameters() or checkpoints
        self._hand_crafted: dict[tuple, torch.Tensor] = {}

    def hand_crafted_template(self) -> str:
        return self.cfg.template or KGCOOP_TEMPLATES.get(self.cfg.dataset, DEFAULT_TEMPLATE)

    def hand_crafted_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Frozen CLIP's L2-normalised features ``[C, E]`` of the hand-crafted prompts (computed once per class set,
        device and precision).

        ``hand_crafted_precision "fp16"``: fp16 features, as the original computes them: CLIP in fp16 (a copy of the
        run's CLIP, :func:`~lamm_plugin.backbone.clip_in_precision`) without autocast, normalised in fp16 when built
        and again at each step (the same values every step: once here); the term's cosine normalises them a third
        time in fp16, as the original's does. ``"run"``: float32 features of the run's CLIP in its precision.
        """
        clip = self._clip
        key = (tuple(classnames), clip.device, clip.dtype)
        if key not in self._hand_crafted:
            texts = [self.hand_crafted_template().format(clean_classname(n)) for n in classnames]
            inputs = {"what": "encode_texts", "texts": texts}
            if self.cfg.hand_crafted_precision == "run":
                features = cached_text_features(
                    self.feature_cache, clip.model, inputs, lambda: clip.encode_texts(texts)
                )
                features = F.normalize(features, dim=-1)
            else:  # keyed by the run's CLIP and the recipe: the fp16 copy is made only when the cache lacks them
                inputs = {**inputs, "hand_crafted_precision": "fp16"}
                with torch.autocast(clip.device.type, enabled=False):
                    features = cached_text_features(
                        self.feature_cache,
                        clip.model,
                        inputs,
                        lambda: clip_in_precision(clip, "fp16").encode_texts(texts),
                    )
                    features = features.half()
                    for _ in range(2):
                        features = features / features.norm(dim=-1, keepdim=True)
            self._hand_crafted = {key: features}
        return self._hand_crafted[key]

    def regularization(self, step: StepFeatures) -> dict[str, tuple[float, torch.Tensor]]:
        reference = self.hand_crafted_features(step.classnames)
        dtype = reference.dtype if self.cfg.hand_crafted_precision == "fp16" else step.text.dtype
        score = 1.0 - F.cosine_similarity(step.text, reference.to(step.text.device, dtype), dim=-1).mean()
        return {"kg_alignment": (self.cfg.kg_weight, score)}
