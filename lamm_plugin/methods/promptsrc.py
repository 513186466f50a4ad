"""PromptSRC: prompting with self-regulating constraints (Khattak et al., "Self-regulating Prompts: Foundational
Model Adaptation without Forgetting", ICCV 2023).

Prompts (:class:`IndependentPrompts`): independent deep text and visual prompts (IVLP of MaPLe's repository).
The text prompt is ``[SOS] ctx_1..ctx_n <rest of "a photo of a"> [CLASS] . [EOS]`` whose ``n`` context vectors are
replaced by fresh ones at the input of each of the first ``prompt_depth_text`` blocks; ``n_ctx_vision`` visual
tokens are appended to the image tokens and replaced the same way in the first ``prompt_depth_vision`` blocks.
Nothing couples the towers.

Self-regularisation (:meth:`PromptSRC.regularization`, three named loss terms beside LAMM's):

* ``src_text``: mean L1 distance between the prompted class text features and frozen CLIP's, the latter averaged
  over 60 hand-crafted templates (:func:`lamm_plugin.templates.promptsrc_templates`);
* ``src_image``: mean L1 distance between the prompted image features and frozen CLIP's (no prompts);
* ``src_logit``: ``KL(p_frozen || p_prompted)`` summed and divided by ``B * C``, frozen logits from the frozen image
  and template-averaged text features.

All features are L2-normalised. Gaussian prompt aggregation (:class:`GaussianPromptAggregation`) averages every
trainable tensor (LAMM's label rows included) over epochs with Gaussian weights: :meth:`PromptSRC.on_epoch_end`
adds each epoch's tensors and writes the aggregate into the model after the last epoch, so any training loop that
calls the hook (the Dassl trainers, ``examples/train_core.py``) runs PromptSRC as the paper does; the aggregate
travels in checkpoints through :meth:`PromptSRC.extra_state`, so a resumed run is exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lamm_plugin import feature_cache
from lamm_plugin.backbone import CLIPBundle, draw_inside_clip_build, draw_like_a_clip_build
from lamm_plugin.encoders import ImageEncoder
from lamm_plugin.methods.base import (
    PROMPT_INIT_STD,
    PromptMethod,
    StepFeatures,
    TextPrompt,
    VisualPrompt,
    initial_context,
    register_method,
)
from lamm_plugin.templates import promptsrc_templates
from lamm_plugin.tokens import clean_classname

logger = logging.getLogger(__name__)
#: The checkpoint key of the GPA state.
GPA_KEY = "gpa"


@dataclass
class PromptSRCConfig:
    """PromptSRC (Khattak et al., ICCV 2023): independent deep text and visual prompts, self-regularised.

    The prompts are IVLP's (MaPLe's repository): text context in the first ``prompt_depth_text`` blocks, visual
    tokens in the first ``prompt_depth_vision`` blocks, fresh at each block. The regularisation ties the prompted
    model to frozen CLIP (mutual agreement) and averages the prompts over epochs (GPA).

    Attributes:
        n_ctx_text: Text prompt tokens per block; the first ``n_ctx_text`` tokens of ``ctx_init`` start them.
        n_ctx_vision: Visual prompt tokens per block.
        ctx_init: Template words whose first ``n_ctx_text`` tokens are learnable.
        prompt_depth_text: Blocks with text prompts (1 = shallow).
        prompt_depth_vision: Blocks with visual prompts (1 = shallow).
        text_loss_weight: Weight of ``src_text``: L1 between prompted and frozen CLIP text features.
        image_loss_weight: Weight of ``src_image``: L1 between prompted and frozen CLIP image features.
        logit_loss_weight: Weight of ``src_logit``: KL from frozen CLIP's logits to the prompted logits.
        gpa: Gaussian-weighted prompt aggregation over epochs (:meth:`PromptSRC.on_epoch_end`).
        gpa_mean: Mean (in epochs, 1-based) of the Gaussian epoch weights.
        gpa_std: Standard deviation of the Gaussian epoch weights.
        num_templates: Hand-crafted templates averaged for the frozen text features (0 = all 60 of PromptSRC).
    """

    n_ctx_text: int = 4
    n_ctx_vision: int = 4
    ctx_init: str = "a photo of a"
    prompt_depth_text: int = 9
    prompt_depth_vision: int = 9
    text_loss_weight: float = 25.0
    image_loss_weight: float = 10.0
    logit_loss_weight: float = 1.0
    gpa: bool = True
    gpa_mean: float = 15.0
    gpa_std: float = 1.0
    num_templates: int = 0

    def __post_init__(self) -> None:
        if self.prompt_depth_text < 1 or self.prompt_depth_vision < 1:
            raise ValueError("PromptSRC needs prompt_depth_text >= 1 and prompt_depth_vision >= 1 (1 = shallow).")
        if self.n_ctx_text < 1 or self.n_ctx_vision < 1:
            raise ValueError("PromptSRC needs n_ctx_text >= 1 and n_ctx_vision >= 1.")
        if self.gpa and self.gpa_std <= 0:
            raise ValueError(f"gpa_std must be positive, got {self.gpa_std}.")


class IndependentPrompts(PromptMethod):
    """Independent deep text and visual prompts (IVLP of MaPLe's repository), the prompts of PromptSRC.

    Not registered itself: the base of the methods that use these prompts. Their config has the fields
    ``n_ctx_text``, ``n_ctx_vision``, ``ctx_init``, ``prompt_depth_text`` and ``prompt_depth_vision`` (see
    :class:`PromptSRCConfig`).
    """

    prompts_image_tower = True
    # The originals create the text ctx in CLIP's dtype, the visual and deep prompts in fp32 (inside CLIP's blocks).
    fp32_in_fp16_runs = ("deep_text", "visual", "deep_visual")

    def __init__(self, cfg: Any, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        _ = clip.vision_width  # clear error on ResNet towers
        if cfg.prompt_depth_text > clip.text_blocks:
            raise ValueError(
                f"prompt_depth_text={cfg.prompt_depth_text} must lie in 1..{clip.text_blocks} ({clip.name})."
            )
        if cfg.prompt_depth_vision > clip.image_blocks:
            raise ValueError(
                f"prompt_depth_vision={cfg.prompt_depth_vision} must lie in 1..{clip.image_blocks} ({clip.name})."
            )
        # The deep prompts are drawn where the originals draw them (inside CLIP's construction), then the context.
        vision, text = (cfg.n_ctx_vision, cfg.prompt_depth_vision), (cfg.n_ctx_text, cfg.prompt_depth_text)
        drawn = draw_inside_clip_build(clip, vision, text, PROMPT_INIT_STD)
        vectors, self.prefix = initial_context(clip, cfg.ctx_init, cfg.n_ctx_text, key="n_ctx_text")
        self.ctx = nn.Parameter(vectors)
        self.deep_text = nn.ParameterList([nn.Parameter(t) for t in drawn["text"]])
        self.visual = nn.Parameter(drawn["vision"][0])
        self.deep_visual = nn.ParameterList([nn.Parameter(t) for t in drawn["vision"][1:]])

    def template(self) -> tuple[str, Sequence[int]]:
        return self.prefix + " {}.", range(self.cfg.n_ctx_text)

    def text_prompt(self) -> TextPrompt:
        return TextPrompt(ctx=self.ctx, deep=list(self.deep_text), deep_start=1)

    def visual_prompt(self) -> VisualPrompt:
        return VisualPrompt(shallow=self.visual, deep=list(self.deep_visual))

    def text_is_trainable(self) -> bool:
        return True


@register_method
class PromptSRC(IndependentPrompts):
    """PromptSRC's independent vision-language prompts and self-regularising losses."""

    name = "promptsrc"
    display_name = "PromptSRC"
    config_class = PromptSRCConfig

    def __init__(self, cfg: PromptSRCConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        templates = promptsrc_templates()
        self.templates = templates[: cfg.num_templates] if cfg.num_templates > 0 else templates
        # Frozen CLIP and its image tower without prompts; not submodules: never in parameters() or checkpoints.
        object.__setattr__(self, "_clip", clip)
        object.__setattr__(self, "_frozen_image", ImageEncoder(clip.model))
        # Frozen CLIP's template-averaged text features per class name, computed when a class is first needed.
        self._frozen_text: dict[str, torch.Tensor] = {}
        # Created at the first epoch's end, when the number of epochs is known; a checkpoint's state waits for it.
        self.gpa: Optional[GaussianPromptAggregation] = None
        self._gpa_state: Optional[dict[str, Any]] = None
        # The original builds two more CLIPs (the frozen zero-shot model, for text and for images): their random
        # draws are made and dropped, so the data order and every later draw follow the original's random stream.
        draw_like_a_clip_build(clip)
        draw_like_a_clip_build(clip)

    def _apply(self, fn, recurse=True):
        self._frozen_text.clear()
        return super()._apply(fn, recurse)

    # ---- self-regularisation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def frozen_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """``[C, E]`` L2-normalised mean over the templates of frozen CLIP's text features of ``classnames``."""
        missing = [n for n in dict.fromkeys(classnames) if n not in self._frozen_text]
        if missing:

            def template_mean() -> torch.Tensor:  # [len(missing), E]
                features = [
                    self._clip.encode_texts([template.format(clean_classname(n)) for n in missing])
                    for template in self.templates
                ]
                return torch.stack(features).mean(0)

            inputs = {"what": "promptsrc-template-mean", "templates": list(self.templates), "classnames": missing}
            mean = feature_cache.cached_text_features(self.feature_cache, self._clip.model, inputs, template_mean)
            for name, feature in zip(missing, mean):
                self._frozen_text[name] = feature
        return F.normalize(torch.stack([self._frozen_text[n] for n in classnames]), dim=-1)

    def regularization(self, step: StepFeatures) -> dict[str, tuple[float, torch.Tensor]]:
        """PromptSRC's mutual-agreement terms ``{name: (weight, unweighted value)}``.

        Args:
            step: The batch, its prompted features (text with learned labels when LAMM is on) and logits.
        """
        cfg = self.cfg
        frozen_text = self.frozen_text_features(step.classnames)
        with torch.no_grad():
            frozen_image = F.normalize(self._frozen_image(step.images.to(self._clip.dtype)).float(), dim=-1)
            frozen_logits = step.logit_scale * frozen_image @ frozen_text.t()
        src_text = F.l1_loss(step.text, frozen_text)
        src_image = F.l1_loss(step.image, frozen_image)
        log_p = F.log_softmax(step.logits, dim=-1)
        log_q = F.log_softmax(frozen_logits, dim=-1)
        src_logit = F.kl_div(log_p, log_q, reduction="sum", log_target=True) / step.logits.numel()
        return {
            "src_text": (cfg.text_loss_weight, src_text),
            "src_image": (cfg.image_loss_weight, src_image),
            "src_logit": (cfg.logit_loss_weight, src_logit),
        }

    # ---- Gaussian prompt aggregation over epochs -------------------------------------------------------------------
    def on_epoch_end(self, model: nn.Module, epoch: int, max_epoch: int) -> None:
        """Add ``model``'s trainable tensors (label rows included) at the end of ``epoch`` to the aggregate; after
        the last epoch, the aggregate becomes the model."""
        if not self.cfg.gpa:
            return
        if self.gpa is None:
            self.gpa = GaussianPromptAggregation(max_epoch, self.cfg.gpa_mean, self.cfg.gpa_std)
            self.gpa.load_state_dict(self._gpa_state)
            self._gpa_state = None
        if self.gpa.epochs_done == 0 and epoch > 0:
            raise ValueError(
                f"GPA has no aggregate of epochs 0..{epoch - 1}: the run resumed from a checkpoint without one, "
                "which cannot resume a run with GPA on."
            )
        self.gpa.update(model, epoch)
        if epoch + 1 == max_epoch:
            logger.info("Using the Gaussian prompt aggregate (GPA) of all %d epochs as the final model", max_epoch)
            self.gpa.apply(model)

    def extra_state(self) -> dict[str, Any]:
        if not self.cfg.gpa:
            return {}
        return {GPA_KEY: self.gpa.state_dict() if self.gpa is not None else self._gpa_state}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if not self.cfg.gpa:
            return
        # Checked against this run's epochs and Gaussian when the aggregation resumes (the next epoch's end).
        self.gpa, self._gpa_state = None, state.get(GPA_KEY)


def gaussian_weights(epochs: int, mean: float, std: float) -> list[float]:
    """PromptSRC's epoch weights: the normal density at epochs ``1..epochs``, normalised to sum to one."""
    if epochs < 1:
        raise ValueError(f"GPA needs at least one epoch, got {epochs}.")
    if std <= 0:
        raise ValueError(f"GPA needs a positive standard deviation, got {std}.")
    density = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
    total = sum(density)
    if total == 0 or not math.isfinite(total):
        raise ValueError(
            f"GPA weights vanish for {epochs} epochs with mean {mean} and std {std}: put the mean within the epochs "
            "or widen the std."
        )
    return [d / total for d in density]


class GaussianPromptAggregation:
    """Gaussian-weighted average of a model's trainable tensors over epochs (PromptSRC's GPA).

    After epoch ``e`` (0-based), :meth:`update` adds ``w[e] * tensor`` to the aggregate of every named trainable
    tensor; :meth:`apply` writes the aggregate into the tensors. The state (:meth:`state_dict`) goes into each
    checkpoint, so that a resumed run aggregates exactly what an uninterrupted one would.

    Args:
        epochs: Number of training epochs.
        mean: Gaussian mean, in 1-based epochs.
        std: Gaussian standard deviation.
    """

    def __init__(self, epochs: int, mean: float, std: float) -> None:
        self.weights = gaussian_weights(epochs, mean, std)
        self.aggregate: dict[str, torch.Tensor] = {}
        self.epochs_done = 0

    @staticmethod
    def tensors(model: nn.Module) -> dict[str, nn.Parameter]:
        """The tensors aggregated: every parameter of ``model`` that requires gradients, by name."""
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module, epoch: int) -> None:
        """Add the tensors at the end of ``epoch`` (0-based) with their weight."""
        if epoch != self.epochs_done:
            raise RuntimeError(f"GPA expects the end of epoch {self.epochs_done}, got epoch {epoch}.")
        if epoch >= len(self.weights):
            raise RuntimeError(f"GPA was set up for {len(self.weights)} epochs; epoch {epoch} is past them.")
        weight = self.weights[epoch]
        for name, tensor in self.tensors(model).items():
            value = tensor.detach().float() * weight
            previous = self.aggregate.get(name)
            if previous is not None and previous.shape != value.shape:
                raise RuntimeError(
                    f"GPA: {name} changed shape from {tuple(previous.shape)} to {tuple(value.shape)} during training "
                    "(classes added mid-run?); aggregate runs of one class set only."
                )
            self.aggregate[name] = value if previous is None else previous + value
        self.epochs_done += 1

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Write the aggregate into ``model``'s trainable tensors (all of them must have been aggregated)."""
        tensors = self.tensors(model)
        if set(tensors) != set(self.aggregate):
            raise RuntimeError(
                f"GPA aggregate holds {sorted(self.aggregate)}, the model trains {sorted(tensors)}: nothing applied."
            )
        for name, tensor in tensors.items():
            tensor.copy_(self.aggregate[name].to(tensor))

    def state_dict(self) -> dict[str, Any]:
        return {"weights": list(self.weights), "epochs_done": self.epochs_done, "aggregate": dict(self.aggregate)}

    def load_state_dict(self, state: Optional[dict[str, Any]]) -> None:
        """Restore :meth:`state_dict` output (a checkpoint's); refuses one made for other epoch weights."""
        if state is None:
            return
        if [round(w, 12) for w in state["weights"]] != [round(w, 12) for w in self.weights]:
            raise ValueError("The checkpoint's GPA was set up for other epochs or Gaussian (OPTIM.MAX_EPOCH, GPA_*).")
        self.epochs_done = int(state["epochs_done"])
        self.aggregate = {k: v.clone() for k, v in state["aggregate"].items()}
