"""LAMM on top of any host prompt-learning method (Gao et al., AAAI 2024, arXiv 2312.08212).

:class:`LAMM` is the one model class of this package: it holds the frozen CLIP encoders, a host method
(:mod:`lamm_plugin.methods`), the learnable label embeddings and the hierarchical loss. With
``LAMMConfig(enabled=False)`` it is exactly the host method (the CoOp / MaPLe / VPT baselines).

Performance (all exact, see DESIGN.md section 3):

1. the text encoder runs up to the last end-of-text token only;
2. prompts with learned labels and with the original labels go through the text encoder in one pass, in which
   the positions before the class name (identical in both, the transformer being causal) are computed once;
3. when the reference branch depends on nothing trainable (context frozen: LAMM alone, VPT), its features are
   computed once and reused until a tensor they depend on changes; in evaluation, text features are reused
   across batches the same way.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from lamm_plugin.backbone import CLIPBundle, weights_fingerprint
from lamm_plugin.config import LAMMConfig, from_dict, to_dict
from lamm_plugin.encoders import ImageEncoder, TextEncoder, length_groups, normalize
from lamm_plugin.label_embedding import LabelEmbedding, label_keys, label_token_counts
from lamm_plugin.losses import HierarchicalLoss
from lamm_plugin.methods import METHODS, PromptMethod
from lamm_plugin.methods.base import StepFeatures, TextPrompt
from lamm_plugin.tokens import PromptLayout, build_layout, clean_classname

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lamm_plugin/1"
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
        object.__setattr__(self, "image", ImageEncoder(clip.model))
        self.register_buffer("logit_scale", clip.model.logit_scale.detach().exp().reshape(()), persistent=False)
        self.loss = HierarchicalLoss(self.cfg, shots)
        self.label_embedding: Optional[LabelEmbedding] = None
        if self.cfg.enabled:
            self.label_embedding = LabelEmbedding(clip.model.token_embedding.weight.shape[1])
        self._cache: dict[str, tuple[Any, torch.Tensor]] = {}
        self.set_classnames(classnames)
        if self.label_embedding is not None:
            self.add_classes(classnames)

    # ---- nn.Module plumbing --------------------------------------------------------------------------------------
    def _apply(self, fn, recurse=True):
        self.frozen._apply(fn)
        self.text._apply(fn)
        self._cache.clear()
        return super()._apply(fn, recurse)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly the tensors an optimiser should update."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def classnames(self) -> list[str]:
        return self.layout.classnames

    # ---- class sets ----------------------------------------------------------------------------------------------
    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Serve another class set (base -> new, ImageNet -> a variant). Learned labels follow by class name."""
        self.method.check_classnames(classnames)
        template, slots = self.method.template()
        layout: PromptLayout = build_layout(self.tokenizer, template, classnames, slots)
        length = layout.max_length if self.text.truncate else layout.tokens.shape[1]
        device = self.logit_scale.device
        tokens = layout.tokens.to(device)
        with torch.no_grad():
            base = self.text.embed(tokens)[:, :length].float()  # [C, L, width]
        self.layout = layout
        self.label_keys = label_keys(layout.classnames)
        self.register_buffer("base_prompts", base, persistent=False)
        self.register_buffer("eot", layout.eot.to(device), persistent=False)
        self.register_buffer("ctx_pos", layout.ctx_pos.to(device), persistent=False)
        self._plan_text_groups()
        self._update_splice_index()

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

    def _plan_text_groups(self) -> None:
        """Split the class prompts into length groups (:func:`~lamm_plugin.encoders.length_groups`).

        Everything a text pass needs to know about the groups is fixed here as Python ints and index buffers, so
        that a training step never reads a size from the GPU (which would stop a CUDA graph).
        """
        layout, device = self.layout, self.logit_scale.device
        lengths = (layout.eot + 1).tolist() if self.text.truncate else [self.base_prompts.shape[1]] * len(layout.eot)
        groups = length_groups(lengths, self.cfg.text_groups)
        starts = layout.name_start.tolist()
        # (size, positions, shared prefix) per group; the shared prefix lies before every class name of the group.
        self._groups = [
            (len(g), max((lengths[c] for c in g), default=1), min((starts[c] for c in g), default=0)) for g in groups
        ]
        order = torch.tensor([c for g in groups for c in g], dtype=torch.long)
        self.register_buffer("group_order", order.to(device), persistent=False)
        self.register_buffer("group_inverse", torch.argsort(order).to(device), persistent=False)

    def _encode(
        self, prompts: torch.Tensor, prompt: TextPrompt, reference: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Text features of ``prompts`` (and of ``reference``, equal to them before the class names), one pass
        per length group."""
        deep, start = prompt.deep, prompt.deep_start
        groups = self._groups
        if len(groups) > 1 and any(d.dim() > 2 for d in deep):  # per-class deep prompts: one group
            groups = [(len(self.eot), max(g[1] for g in groups), min(g[2] for g in groups))]
        if len(groups) == 1:
            _, length, shared = groups[0]
            if reference is None:
                return self.text(prompts, self.eot, deep, start, length), None
            return self.text.forward_pair(prompts, reference, self.eot, shared, deep, start, length)
        sizes = [g[0] for g in groups]
        order = self.group_order
        parts = zip(groups, prompts[order].split(sizes), self.eot[order].split(sizes))
        if reference is None:
            text = [self.text(x[:, :length], eot, deep, start, length) for (_, length, _), x, eot in parts]
            return torch.cat(text)[self.group_inverse], None
        refs = reference[order].split(sizes)
        pairs = [
            self.text.forward_pair(x[:, :length], ref[:, :length], eot, shared, deep, start, length)
            for ((_, length, shared), x, eot), ref in zip(parts, refs)
        ]
        text = torch.cat([p[0] for p in pairs])[self.group_inverse]
        return text, torch.cat([p[1] for p in pairs])[self.group_inverse]

    def _encode_per_image(
        self, prompts: torch.Tensor, reference: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`_encode` for per-image prompts ``[B, C, L, width]`` (CoCoOp): every image's ``C`` prompts go
        through the length groups together, one batched pass per group; returns ``[B, C, E]`` features."""
        b = prompts.shape[0]
        groups, order = self._groups, self.group_order
        if len(groups) == 1:
            parts = [(groups[0], prompts, reference, self.eot)]
        else:
            sizes = [g[0] for g in groups]
            refs = reference[:, order].split(sizes, dim=1) if reference is not None else [None] * len(groups)
            parts = zip(groups, prompts[:, order].split(sizes, dim=1), refs, self.eot[order].split(sizes))
        texts, references = [], []
        for (n, length, shared), x, ref, eot in parts:
            x, eot = x[:, :, :length].flatten(0, 1), eot.repeat(b)  # image-major: [B * n, length, width]
            if ref is None:
                texts.append(self.text(x, eot, None, 1, length).unflatten(0, (b, n)))
                continue
            pair = self.text.forward_pair(x, ref[:, :, :length].flatten(0, 1), eot, shared, None, 1, length)
            texts.append(pair[0].unflatten(0, (b, n)))
            references.append(pair[1].unflatten(0, (b, n)))
        text = torch.cat(texts, dim=1)
        ref_text = torch.cat(references, dim=1) if references else None
        if len(groups) > 1:
            text = text[:, self.group_inverse]
            ref_text = ref_text[:, self.group_inverse] if ref_text is not None else None
        return text, ref_text

    def _update_splice_index(self) -> None:
        device = self.logit_scale.device
        if self.label_embedding is None:
            rows = flat = torch.empty(0, dtype=torch.long)
        else:
            rows, flat = self.label_embedding.splice_index(
                self.label_keys, self.layout.name_start, self.layout.name_len, self.base_prompts.shape[1]
            )
        self.register_buffer("row_index", rows.to(device), persistent=False)
        self.register_buffer("flat_position", flat.to(device), persistent=False)
        self._cache.clear()

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

    @staticmethod
    def _versions(tensors) -> tuple:
        """Changes whenever one of ``tensors`` is modified in place (optimiser step, load) or replaced."""
        return tuple((id(t), t._version) for t in tensors)

    def _cached(self, key: str, compute, depends_on) -> torch.Tensor:
        """``compute()`` (without gradients), recomputed only when a tensor in ``depends_on`` has changed."""
        version = self._versions(depends_on)
        hit = self._cache.get(key)
        if hit is None or hit[0] != version:
            with torch.no_grad():
                hit = (version, compute())
            self._cache[key] = hit
        return hit[1]

    def encode_text(self, reference: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Class text features with learned labels, and (if asked) with the original labels.

        Returns:
            ``(text, reference_text)``, each ``[C, E]`` and unnormalised; ``reference_text`` is ``None`` unless
            ``reference`` is true.
        """
        prompt = self.method.text_prompt()
        prompts = self._with_context(prompt)
        learned = prompts
        if self.label_embedding is not None and self.flat_position.numel():
            learned = LabelEmbedding.splice(prompts, self._label_rows()[0], self.flat_position)

        def run(x: torch.Tensor) -> torch.Tensor:
            return self._encode(x, prompt)[0]

        # Without learned labels and trainable text prompts (VPT, zero-shot), the text features are constants.
        constant = self.cfg.cache_reference and not self.method.text_is_trainable()
        # The original-label prompts read the method's text tensors and the class set, never the labels.
        text_tensors = [t for t in (prompt.ctx, *prompt.deep) if t is not None]
        depends_on = (*text_tensors, self.base_prompts, self.ctx_pos)
        if not reference:
            if constant and self.label_embedding is None:
                return self._cached("reference", lambda: run(prompts), depends_on), None
            return run(learned), None
        if constant:
            return run(learned), self._cached("reference", lambda: run(prompts), depends_on)
        # One pass for both; the positions before the first class name are the same in both and computed once.
        return self._encode(learned, prompt, prompts)

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
        learned = prompts
        if self.label_embedding is not None and self.flat_position.numel():
            learned = LabelEmbedding.splice(prompts, self._label_rows()[0], self.flat_position)
        learned = self._per_image_context(learned, ctx)
        if not reference:
            return self._encode_per_image(learned)
        # One pass for both; the positions before the first class name (start token, context) are shared.
        return self._encode_per_image(learned, self._per_image_context(prompts, ctx))

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
        with_loss = self.training and labels is not None
        with_reference = with_loss and self.label_embedding is not None
        image = normalize(self.encode_image(images).float())
        per_image = self.method.image_conditioned
        if per_image and self.training:  # [B, C, E] text features, one set per image
            text, ref = self.encode_text_per_image(image, reference=with_reference)
        elif per_image:
            chunk = max(1, EVAL_PROMPTS_PER_PASS // len(self.eot))
            text, ref = torch.cat([self.encode_text_per_image(part)[0] for part in image.split(chunk)]), None
        elif self.training:
            text, ref = self.encode_text(reference=with_reference)
        else:
            depends_on = (*self.parameters(), *self.buffers())
            text, ref = self._cached("eval_text", lambda: self.encode_text()[0], depends_on), None
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
                total = total + weight * value
            losses["total"] = total
        return LAMMOutput(logits, losses)

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
        self._cache.clear()


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
