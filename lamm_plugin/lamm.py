"""LAMM on top of any host prompt-learning method (Gao et al., AAAI 2024, arXiv 2312.08212).

:class:`LAMM` is the one model class of this package: it holds the frozen CLIP encoders, a host method
(:mod:`lamm_plugin.methods`), the learnable label embeddings and the hierarchical loss. With
``LAMMConfig(enabled=False)`` it is exactly the host method (the CoOp / MaPLe / VPT baselines).

This module holds the method: the label rows spliced into the host's prompts, the reference branch with CLIP's
original class-name embeddings, and the three alignment losses added to the host's. How the prompts go through
the text encoder fast and exactly (EOT truncation, length groups, the shared-prefix pass of both branches, the
caches of constant features) is :class:`~lamm_plugin.text_plan.TextPlan`'s concern.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle, weights_fingerprint
from lamm_plugin.config import LAMMConfig, from_dict, to_dict
from lamm_plugin.encoders import ImageEncoder, TextEncoder, normalize
from lamm_plugin.feature_cache import FeatureCache, cached_text_features
from lamm_plugin.label_embedding import LabelEmbedding, label_keys, label_token_counts
from lamm_plugin.layout import CHECKPOINT_FORMAT
from lamm_plugin.losses import HierarchicalLoss
from lamm_plugin.methods import METHODS, PromptMethod
from lamm_plugin.methods.base import StepFeatures, TextPrompt
from lamm_plugin.text_plan import TextPlan
from lamm_plugin.tokens import PromptLayout, build_layout, clean_classname

#: Most per-image prompts (images x classes) one evaluation pass of an image-conditioned method encodes (CoCoOp on
#: ImageNet: 1000 prompts per image); larger test batches go through in chunks of images.
EVAL_PROMPTS_PER_PASS = 16384


@dataclass
class LAMMOutput:
    """Result of :meth:`LAMM.forward`.

    Attributes:
        logits: ``[B, C]`` logits (learned labels).
        losses: Named loss terms (``"total"`` is the one to back-propagate); ``None`` without labels or in eval.
    """

    logits: torch.Tensor
    losses: Optional[dict[str, torch.Tensor]] = None


class LAMM(nn.Module):
    """A host prompt-learning method with LAMM's label embeddings and hierarchical loss.

    The frozen CLIP is not a registered submodule: ``parameters()`` and ``state_dict()`` hold only what the
    method and LAMM learn (a checkpoint is kilobytes), while ``.to()`` / ``.cuda()`` still move CLIP along.

    Args:
        method: The host method.
        clip: The frozen CLIP.
        classnames: Class names in label order.
        cfg: LAMM settings (``enabled=False`` gives the plain host method).
        shots: Shots per class of the training set (``K`` of the parameter-alignment weight).
    """

    def __init__(
        self,
        method: PromptMethod,
        clip: CLIPBundle,
        classnames: Sequence[str],
        cfg: Optional[LAMMConfig] = None,
        shots: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = cfg or LAMMConfig()
        self.method = method
        self.backbone = clip.name
        self.clip_weights = weights_fingerprint(clip.model)
        self.tokenizer = clip.tokenizer
        # Unregistered on purpose (see class docstring); _apply forwards device/dtype moves to them.
        object.__setattr__(self, "frozen", nn.ModuleList([clip.model]))
        object.__setattr__(self, "text", TextEncoder(clip.model, truncate=self.cfg.truncate_text))
        object.__setattr__(self, "image", ImageEncoder(clip.model, checkpoint=method.checkpoint_image()))
        self.register_buffer("logit_scale", clip.model.logit_scale.detach().exp().reshape(()), persistent=False)
        self.loss = HierarchicalLoss(self.cfg, shots)
        self.label_embedding: Optional[LabelEmbedding] = None
        if self.cfg.enabled:
            self.label_embedding = LabelEmbedding(clip.model.token_embedding.weight.shape[1])
        self.text_plan = TextPlan(self.text, self.cfg.text_groups)
        self.feature_cache: Optional[FeatureCache] = None  # see set_feature_cache
        self.set_classnames(classnames)
        if self.label_embedding is not None:
            self.add_classes(classnames)

    # ---- nn.Module plumbing --------------------------------------------------------------------------------------
    def _apply(self, fn, recurse=True):
        self.frozen._apply(fn)
        self.text._apply(fn)
        return super()._apply(fn, recurse)  # the text plan, a submodule, clears its caches

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly the tensors an optimiser should update."""
        return [p for p in self.parameters() if p.requires_grad]

    def learned_to_fp16(self) -> None:
        """The learned tensors in fp16 as the original code's ``PREC fp16`` runs keep them: all of them (the label
        rows as the official LAMM code's) but those of the method's ``fp32_in_fp16_runs``, which stay fp32."""
        kept = type(self.method).fp32_in_fp16_runs
        fp32 = {id(p) for name, p in self.method.named_parameters() if name.split(".")[0] in kept}
        for param in self.trainable_parameters():
            if id(param) not in fp32:
                param.data = param.data.half()

    @property
    def classnames(self) -> list[str]:
        return self.layout.classnames

    # ---- class sets ----------------------------------------------------------------------------------------------
    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Serve another class set (base -> new, ImageNet -> a variant). Learned labels follow by class name."""
        self.method.check_classnames(classnames)
        template, slots = self.method.template()
        layout: PromptLayout = build_layout(self.tokenizer, template, classnames, slots)
        length = self.text_plan.prompt_length(layout)
        device = self.logit_scale.device
        tokens = layout.tokens.to(device)
        with torch.no_grad():
            base = self.text.embed(tokens)[:, :length].float()  # [C, L, width]
        self.layout = layout
        self.label_slot = self._label_slot(layout)
        self.label_keys = label_keys(layout.classnames)
        self.register_buffer("base_prompts", base, persistent=False)
        self.register_buffer("eot", layout.eot.to(device), persistent=False)
        self.register_buffer("ctx_pos", layout.ctx_pos.to(device), persistent=False)
        self.text_plan.set_layout(layout, length, device, self.label_slot[0])
        self._update_splice_index()

    def _label_slot(self, layout: PromptLayout) -> tuple[torch.Tensor, torch.Tensor]:
        """``(start, length)`` per class: where its label rows go and how many positions the slot offers
        (``LAMMConfig.label_slot``): the class name's tokens, or the template tokens after the last context slot up
        to the class name (or the end-of-text token)."""
        if self.label_embedding is None or self.cfg.label_slot == "name":
            return layout.name_start, layout.name_len
        if layout.ctx_pos.shape[1] == 0:
            raise ValueError(
                f"label_slot 'after_context' needs context slots in the prompt; {self.method.display_name}'s template "
                "has none: set LAMM label_slot to 'name'."
            )
        start = layout.ctx_pos.max(dim=1).values + 1
        end = torch.where(layout.name_start >= start, layout.name_start, layout.eot)
        return start, end - start

    def add_classes(self, classnames: Sequence[str]) -> None:
        """Give label embeddings to ``classnames``, appending the ones not yet served to the class set.

        A name given ``k`` times stands for ``k`` classes: occurrences beyond those already served are appended.
        Existing label rows are left untouched (continual learning); build the optimiser afterwards.
        """
        if self.label_embedding is None:
            raise RuntimeError("add_classes needs LAMM enabled (label embeddings).")
        names = [clean_classname(n) for n in classnames]
        unserved = Counter(names) - Counter(self.classnames)  # occurrences beyond those served
        new_names = []
        for name in names:
            if unserved[name] > 0:
                unserved[name] -= 1
                new_names.append(name)
        if new_names:
            self.set_classnames(self.classnames + new_names)
        requested, known = set(names), set(self.label_embedding.classnames)
        classes = [
            c for c, (n, key) in enumerate(zip(self.classnames, self.label_keys)) if n in requested and key not in known
        ]
        if classes:
            # Every such class is served now: its CLIP name embeddings sit in the base prompts.
            starts, lens = self.layout.name_start[classes].tolist(), self.layout.name_len[classes].tolist()
            counts = label_token_counts(lens, self.cfg.label_tokens, self.cfg.first_k, self.cfg.min_len_cap)
            rows = [self.base_prompts[c, s : s + k] for c, s, k in zip(classes, starts, counts)]
            self.label_embedding.add_classes([self.label_keys[c] for c in classes], rows)
        repeated = sorted(n for n, count in Counter(self.classnames).items() if count > 1)
        if repeated:
            keys = [k for n, k in zip(self.classnames, self.label_keys) if n in repeated]
            warnings.warn(
                f"Repeated class names {repeated}: each of these classes keeps its own label embedding (keys "
                f"{keys}), but their prompts start identical, so only training tells them apart.",
                stacklevel=2,
            )
        self._update_splice_index()

    def randomize_labels(self, drawn: Optional[list[Optional[torch.Tensor]]] = None) -> None:
        """Start the trainable label rows from N(0, 0.02^2) (``LAMMConfig.random_init``), from ``drawn`` if given
        (:meth:`LabelEmbedding.draw`, :meth:`LabelEmbedding.randomize`)."""
        if self.label_embedding is None:
            raise RuntimeError("randomize_labels needs LAMM enabled (label embeddings).")
        self.label_embedding.randomize(drawn)
        self._update_splice_index()

    def _update_splice_index(self) -> None:
        device = self.logit_scale.device
        if self.label_embedding is None:
            rows = flat = torch.empty(0, dtype=torch.long)
        else:
            rows, flat = self.label_embedding.splice_index(
                self.label_keys, *self.label_slot, self.base_prompts.shape[1]
            )
        self.register_buffer("row_index", rows.to(device), persistent=False)
        self.register_buffer("flat_position", flat.to(device), persistent=False)
        self.text_plan.clear()

    # ---- text side -----------------------------------------------------------------------------------------------
    def _with_context(self, prompt: TextPrompt) -> torch.Tensor:
        """Base prompt embeddings with the method's context vectors written into the context slots."""
        prompts = self.base_prompts
        if prompt.ctx is None or self.ctx_pos.numel() == 0:
            return prompts
        c, _, width = prompts.shape
        ctx = prompt.ctx.expand(c, -1, -1) if prompt.ctx.dim() == 2 else prompt.ctx
        index = self.ctx_pos.unsqueeze(-1).expand(-1, -1, width)
        return prompts.scatter(1, index, ctx.to(prompts.dtype))

    def _label_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The label rows of the current class set and their initial values, ``[R, width]`` each."""
        return self.label_embedding.rows()[self.row_index], self.label_embedding.init[self.row_index]

    def _with_labels(self, prompts: torch.Tensor) -> torch.Tensor:
        """``[C, L, width]`` prompts with the learned label rows in the class-name positions of the classes that
        have them (the others keep CLIP's name embeddings)."""
        if self.label_embedding is None or not self.flat_position.numel():
            return prompts
        return LabelEmbedding.splice(prompts, self._label_rows()[0], self.flat_position)

    def encode_text(self, reference: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Class text features with learned labels, and (if asked) with the original labels.

        Returns:
            ``(text, reference_text)``, each ``[C, E]`` and unnormalised; ``reference_text`` is ``None`` unless
            ``reference`` is true.
        """
        prompt = self.method.text_prompt()
        prompts = self._with_context(prompt)
        learned = self._with_labels(prompts) if self.label_embedding is not None else None
        constant = None
        if self.cfg.cache_reference and not self.method.text_is_trainable():
            # The original-label prompts read the method's text tensors and the class set, never the labels:
            # without trainable text prompts (LAMM alone, VPT, zero-shot) their features are constants.
            text_tensors = [t for t in (prompt.ctx, *prompt.deep) if t is not None]
            constant = (*text_tensors, self.base_prompts, self.ctx_pos)
        return self.text_plan.class_features(prompts, learned, self.eot, prompt, reference, constant)

    def _per_image_context(self, prompts: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``[C, L, width]`` prompts with each image's context ``ctx`` (``[B, n_ctx, width]``) in the context slots:
        ``[B, C, L, width]``."""
        (c, length, width), b, n = prompts.shape, ctx.shape[0], self.ctx_pos.shape[1]
        index = self.ctx_pos[None, :, :, None].expand(b, c, n, width)
        values = ctx.to(prompts.dtype).unsqueeze(1).expand(b, c, n, width)
        return prompts.unsqueeze(0).expand(b, c, length, width).scatter(2, index, values)

    def encode_text_per_image(
        self, image: torch.Tensor, reference: bool = False
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Per-image class text features ``[B, C, E]`` of an image-conditioned method (CoCoOp), and (if asked) the
        same with the original labels, from L2-normalised image features ``[B, E]``."""
        ctx = self.method.image_context(image)  # [B, n_ctx, width]
        prompts = self.base_prompts
        learned = self._per_image_context(self._with_labels(prompts), ctx)
        if not reference:
            return self.text_plan.encode_per_image(learned, self.eot)
        # One pass for both; the positions before the first class name (start token, context) are shared.
        return self.text_plan.encode_per_image(learned, self.eot, self._per_image_context(prompts, ctx))

    # ---- forward -------------------------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features ``[B, E]`` (unnormalised) with the method's visual prompts."""
        prompt = self.method.visual_prompt()
        dtype = self.text.dtype
        return self.image(images.to(dtype), prompt.shallow, prompt.deep)

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> LAMMOutput:
        """Logits, and in training mode with ``labels`` the loss terms.

        Args:
            images: ``[B, 3, H, W]`` normalised images.
            labels: ``[B]`` class indices into the current class set.
        """
        if not self.training:
            return LAMMOutput(self.logits_from_image_features(self.encode_image(images)))
        with_loss = labels is not None
        with_reference = with_loss and self.label_embedding is not None
        image = normalize(self.encode_image(images).float())
        if self.method.image_conditioned:  # [B, C, E] text features, one set per image
            text, ref = self.encode_text_per_image(image, reference=with_reference)
        else:
            text, ref = self.encode_text(reference=with_reference)
        text = normalize(text.float())
        logits = self._logits(image, text)
        if not with_loss:
            return LAMMOutput(logits)
        if not with_reference:
            losses = self.loss(logits, labels)
        else:
            ref = normalize(ref.float())
            rows, init = self._label_rows()
            losses = self.loss(logits, labels, self._logits(image, ref), text, ref, rows, init)
        # The host method's own terms, named beside LAMM's (KgCoOp's kg_alignment, PromptSRC's self-regularisation).
        extra = self.method.regularization(StepFeatures(images, image, text, logits, self.classnames, self.logit_scale))
        if extra:
            total = losses.pop("total")
            for name, (weight, value) in extra.items():
                losses[name] = value
                if weight is not None:  # None: reported, and back-propagated by the method's own backward hook
                    total = total + weight * value
            losses["total"] = total
        return LAMMOutput(logits, losses)

    def forward_backward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        scaler: Optional[torch.amp.GradScaler] = None,
        autocast_dtype: Optional[torch.dtype] = None,
        autocast_cache: bool = True,
    ) -> LAMMOutput:
        """One training step's forward and backward: the one step of every training loop (the Dassl trainers, their
        CUDA-graph capture, ``examples/train_core.py``). The backward is the method's
        :meth:`~lamm_plugin.methods.PromptMethod.backward` (``total.backward()`` unless the host changes gradients);
        ``.grad`` of :meth:`trainable_parameters` then holds the step's (scaled) gradients, the optimiser step is
        the caller's.

        Args:
            images: ``[B, 3, H, W]`` normalised images.
            labels: ``[B]`` class indices.
            scaler: A GradScaler whose scale multiplies every back-propagated loss, or ``None``.
            autocast_dtype: Run the forward under autocast to this dtype (``amp``), or ``None``.
            autocast_cache: Autocast's weight cache (off inside a CUDA graph capture).
        """
        autocast = contextlib.nullcontext()
        if autocast_dtype is not None:
            autocast = torch.autocast(images.device.type, dtype=autocast_dtype, cache_enabled=autocast_cache)
        with autocast:
            out = self(images, labels)
        scale = scaler.scale if scaler is not None else (lambda loss: loss)
        self.method.backward(out.losses, self.trainable_parameters(), scale)
        return out

    def logits_from_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Evaluation logits ``[B, C]`` from image features ``[B, E]`` as :meth:`encode_image` returns them (the
        image tower's output, unnormalised): exactly what :meth:`forward` computes in eval mode from the images.

        Where the image tower takes no prompts (:attr:`image_features_cacheable`), the features of a test set are the
        same for every run, and an evaluation can read them from a cache (:mod:`lamm_plugin.feature_cache`).
        """
        if self.training:
            raise RuntimeError("logits_from_image_features gives evaluation logits: call model.eval() first.")
        image = normalize(features.float())
        if self.method.image_conditioned:
            chunk = max(1, EVAL_PROMPTS_PER_PASS // len(self.eot))
            text = torch.cat([self.encode_text_per_image(part)[0] for part in image.split(chunk)])
        else:
            text = self.eval_text()
        return self._logits(image, normalize(text.float()))

    def eval_text(self) -> torch.Tensor:
        """``[C, E]`` unnormalised class text features for evaluation, computed once until a tensor they depend on
        changes (the text plan's ``eval_text`` cache)."""
        depends_on = (*self.parameters(), *self.buffers())
        return self.text_plan.cached("eval_text", self._eval_text, depends_on)

    def logits_with_text(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Evaluation logits ``[B, C]`` of ``images`` against unnormalised class text features ``text`` ``[C, E]``
        (of :meth:`eval_text`): what :meth:`forward` computes in eval mode, less the text features, which do not
        depend on the batch; :class:`~lamm_plugin.cuda_graph.GraphedForward` captures it."""
        image = normalize(self.encode_image(images).float())
        return self._logits(image, normalize(text.float()))

    @property
    def image_features_cacheable(self) -> bool:
        """Whether :meth:`encode_image` is frozen CLIP's image tower without prompts, so that its features of an
        image never change (the method's ``prompts_image_tower`` is false).

        Raises:
            RuntimeError: The method declares an unprompted image tower but gives visual prompts.
        """
        if self.method.prompts_image_tower:
            return False
        prompt = self.method.visual_prompt()
        if prompt.shallow is not None or prompt.deep:
            raise RuntimeError(
                f"{type(self.method).__name__} gives visual prompts but declares prompts_image_tower = False: set it "
                "to True in its class, or its test-set image features would be cached and stay stale."
            )
        return True

    def set_feature_cache(self, cache: Optional[FeatureCache]) -> None:
        """Keep the frozen-CLIP text features of fixed prompts (the host's, and the class features of a model with
        nothing learned on the text side) in ``cache``; ``None`` computes them in every run."""
        self.feature_cache = cache
        self.method.feature_cache = cache

    def _eval_text(self) -> torch.Tensor:
        """``[C, E]`` evaluation text features; from the feature cache when they depend on nothing learned."""
        prompt = self.method.text_prompt()
        fixed = self.label_embedding is None and prompt.ctx is None and not prompt.deep
        if self.feature_cache is None or not fixed:
            return self.encode_text()[0]
        # The prompts are CLIP's token embeddings of the layout's tokens, encoded by the plan's passes.
        inputs = {
            "what": "lamm-class-features",
            "tokens": hashlib.sha256(self.layout.tokens.cpu().numpy().tobytes()).hexdigest(),
            "eot": self.eot.tolist(),
            "length": self.base_prompts.shape[1],
            "truncate": self.text.truncate,
            "groups": [list(group) for group in self.text_plan.groups],
        }
        return cached_text_features(self.feature_cache, self.frozen[0], inputs, lambda: self.encode_text()[0])

    def _logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` logits of normalised image ``[B, E]`` and text ``[C, E]`` (or per-image ``[B, C, E]``)."""
        if text.dim() == 3:
            return self.logit_scale * torch.einsum("be,bce->bc", image, text)
        return self.logit_scale * image @ text.t()

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Learned tensors plus what they belong to; loadable with ``torch.load(..., weights_only=True)``."""
        return {
            "format": CHECKPOINT_FORMAT,
            "method": self.method.name,
            "backbone": self.backbone,
            "clip_weights": self.clip_weights,
            "classnames": list(self.classnames),
            "method_config": to_dict(self.method.cfg),
            "lamm_config": to_dict(self.cfg),
            "state_dict": self.state_dict(),
        }

    def load_checkpoint_state(self, state: dict[str, Any], allow_other_weights: bool = False) -> None:
        """Load :meth:`checkpoint_state` output; learned labels are matched by class name.

        Args:
            state: The checkpoint.
            allow_other_weights: Load a checkpoint trained on other CLIP weights of the same backbone (its
                learned tensors were fitted to those weights, so results will differ).

        Raises:
            ValueError: A checkpoint of another format, method, backbone, CLIP weights or LAMM setting.
        """
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"Not a {CHECKPOINT_FORMAT} checkpoint (keys: {sorted(state)[:8]}).")
        problems = []
        if state["method"] != self.method.name:
            problems.append(f"method {state['method']!r} (this model: {self.method.name!r})")
        if state["backbone"] != self.backbone:
            problems.append(f"backbone {state['backbone']!r} (this model: {self.backbone!r})")
        theirs = state.get("clip_weights")  # absent from checkpoints written before it was recorded
        if theirs is not None and theirs != self.clip_weights and not allow_other_weights:
            problems.append(
                f"CLIP weights {theirs} (this model: {self.clip_weights}; a weights fingerprint): it was trained on "
                "other weights of this backbone; load them (MODEL.BACKBONE.PRETRAINED), or pass "
                "allow_other_weights=True (MODEL.BACKBONE.ALLOW_OTHER_WEIGHTS True) to load it anyway"
            )
        if state["lamm_config"].get("enabled") != self.cfg.enabled:
            kind = "with" if state["lamm_config"].get("enabled") else "without"
            problems.append(f"trained {kind} LAMM label embeddings (this model: enabled={self.cfg.enabled})")
        if problems:
            raise ValueError("Checkpoint does not fit this model: " + "; ".join(problems) + ".")
        self.load_state_dict(state["state_dict"])
        self.text_plan.clear()


def build_model(
    method: str,
    clip: CLIPBundle,
    classnames: Sequence[str],
    method_cfg: Any = None,
    lamm_cfg: Optional[LAMMConfig] = None,
    shots: int = 0,
) -> LAMM:
    """Build a host method with LAMM on top.

    Args:
        method: Registered method name (``"coop"``, ``"maple"``, ``"vpt"``, ``"promptsrc"``, ``"zeroshot"``).
        clip: The frozen CLIP (:func:`lamm_plugin.load_clip`).
        classnames: Class names in label order.
        method_cfg: The method's config dataclass, or a dict of its fields; defaults when ``None``.
        lamm_cfg: LAMM settings; ``LAMMConfig(enabled=False)`` gives the plain host method.
        shots: Shots per class of the training set (parameter-alignment weight ``1/K``).
    """
    if method not in METHODS:
        raise KeyError(f"Unknown method {method!r}; registered: {sorted(METHODS)}.")
    cls = METHODS[method]
    if method_cfg is None:
        method_cfg = cls.config_class()
    elif isinstance(method_cfg, dict):
        method_cfg = from_dict(cls.config_class, method_cfg)
    host = cls(method_cfg, clip, classnames).to(clip.model.token_embedding.weight.device)
    return LAMM(host, clip, classnames, lamm_cfg, shots=shots)
